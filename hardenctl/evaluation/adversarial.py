"""``--save-adversarial DIR``: every sample's worst-case point, lossless, written by the process that attacked it.

One ``.npz`` per batch of the main suite, named by sample index (see :func:`write_adversarial`), so the files of a
sharded or resumed run are those of one uninterrupted process, to the bit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from torch import Tensor

from ..errors import UserError
from ..files import atomic_path
from .runner import Keeper
from .suite import BatchResult


def write_adversarial(
    directory: str | Path,
    batch: BatchResult,
    y: Tensor,
    worst: Tensor,
    attack_names: Sequence[str],
    sample_ids: Tensor | None = None,
) -> Path:
    """One batch's worst-case points, lossless: ``adv_{first:06d}-{last:06d}.npz`` with ``index`` (int64 sample
    indices), ``adversarial`` (float32 N×C×H×W in [0, 1], exactly the points scored), ``label``, ``clean_prediction``,
    ``adversarial_prediction``, ``robust`` and ``broken_by`` (the attack's name; ``""`` when robust or misclassified
    clean, where ``adversarial`` is the last attack's point or the clean image). Written atomically. ``sample_ids``
    (``--sequential``): each position's index in the evaluated set; the file is named by positions in the run's order
    and ``index`` holds the images' own indices."""
    first, last = batch.start, batch.start + len(batch) - 1
    index = (
        np.arange(first, last + 1, dtype=np.int64)
        if sample_ids is None
        else sample_ids[first : last + 1].numpy().astype(np.int64)
    )
    path = Path(directory) / f"adv_{first:06d}-{last:06d}.npz"
    names = np.array([attack_names[b] if b >= 0 else "" for b in batch.broken_by.tolist()])
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(
                fh,
                index=index,
                adversarial=worst.float().numpy(),
                label=y.numpy().astype(np.int64),
                clean_prediction=batch.clean_prediction.numpy(),
                adversarial_prediction=batch.robust_prediction.numpy(),
                robust=batch.robust.numpy(),
                broken_by=names,
            )
    return path


class AdversarialWriter(Keeper):
    """Writes the main stage's batches into ``directory`` as they finish (a keeper of :class:`EvalRunner`)."""

    def __init__(self, directory: str | Path, stage: str, attack_names: Sequence[str]):
        self.directory, self.stage, self.attack_names = Path(directory), stage, list(attack_names)
        self.sample_ids: Tensor | None = None  # --sequential: the evaluated set's index of each row of the run's order

    def check(self, resume: bool) -> None:
        """Refuse a file, or a directory holding another run's images (unless resuming the run that wrote them)."""
        if self.directory.exists() and not self.directory.is_dir():
            raise UserError(f"--save-adversarial {self.directory} is a file", "pass a directory")
        if not resume and self.directory.is_dir() and any(self.directory.glob("adv_*.npz")):
            raise UserError(
                f"--save-adversarial {self.directory} already holds adversarial images",
                "pass an empty directory (or --resume to continue the run that wrote them)",
            )

    def finished(self, stage: str, result: BatchResult, x: Tensor, y: Tensor, worst: Tensor) -> None:
        if stage == self.stage:
            write_adversarial(self.directory, result, y, worst, self.attack_names, self.sample_ids)
