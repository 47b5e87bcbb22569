"""How an evaluation's batches run: on which ``torchrun`` process, what survives a kill, which images are kept.

``torchrun --nproc_per_node=N -m hardenctl eval ...`` splits every stage of an evaluation (the suite, each ε of a
sweep, the ε = 0.5 check) by whole batches: batch ``b`` runs on rank ``b mod N``. A batch is seeded by its start
index, so it gives the same per-sample results wherever it runs; at the end of a stage every process gathers all
batch results and assembles them by sample index (counts summed, norms maxed: never rates averaged), so the report
is identical to a single-process run with the same seed and batch size. Only rank 0 writes the report files.

One process per GPU (``cuda:LOCAL_RANK``, NCCL) or CPU processes (gloo). With ``--resume-dir`` each process also
keeps its :class:`~hardenctl.evaluate.resume.EvalState`; with ``--save-adversarial`` each process writes the
adversarial images of the batches it ran (one ``.npz`` per batch; see :func:`write_adversarial`).
"""
from __future__ import annotations

import itertools
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..distributed import Distributed
from ..errors import UserError
from ..files import atomic_path
from ..pictures import PICTURES, Gallery
from .resume import EvalState
from .suite import NOT_ATTACKED, BatchResult, BatchRunner

# A stage ends with every process waiting for the slowest one: allow for a few slow batches of a large model.
GATHER_TIMEOUT = timedelta(hours=4)


def owned_batches(batches: int, rank: int, world_size: int) -> list[int]:
    """The batch numbers rank ``rank`` of ``world_size`` runs: ``b mod world_size == rank``."""
    return list(range(rank, batches, world_size))


def rank_device(device: str, dist: Distributed) -> str:
    """The device a process evaluates on: under torchrun a CUDA request means ``cuda:LOCAL_RANK`` (one GPU each)."""
    if dist.world_size == 1 or device == "cpu" or device.startswith("cpu"):
        return device
    if device == "auto" and not torch.cuda.is_available():
        return device
    if device.startswith("cuda") or device == "auto":
        count = torch.cuda.device_count()
        if dist.local_rank >= count:
            raise UserError(f"torchrun started local rank {dist.local_rank} but this node has {count} GPU(s)",
                            f"pass --nproc_per_node={max(count, 1)} (one process per GPU), or --device cpu")
        return f"cuda:{dist.local_rank}"
    return device


def write_adversarial(directory: str | Path, batch: BatchResult, y: Tensor, worst: Tensor, attack_names: Sequence[str]) -> Path:
    """One batch's worst-case points, lossless: ``adv_{first:06d}-{last:06d}.npz`` with ``index`` (int64 sample
    indices), ``adversarial`` (float32 N×C×H×W in [0, 1], exactly the points scored), ``label``, ``clean_prediction``,
    ``adversarial_prediction``, ``robust`` and ``broken_by`` (the attack's name; ``""`` when robust or misclassified
    clean, where ``adversarial`` is the last attack's point or the clean image). Written atomically."""
    first, last = batch.start, batch.start + len(batch) - 1
    path = Path(directory) / f"adv_{first:06d}-{last:06d}.npz"
    names = np.array([attack_names[b] if b >= 0 else "" for b in batch.broken_by.tolist()])
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, index=np.arange(first, last + 1, dtype=np.int64), adversarial=worst.float().numpy(),
                     label=y.numpy().astype(np.int64), clean_prediction=batch.clean_prediction.numpy(),
                     adversarial_prediction=batch.robust_prediction.numpy(), robust=batch.robust.numpy(), broken_by=names)
    return path


def read_adversarial(directory: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Every saved sample: (indices, images) in index order, from the ``.npz`` files of ``directory``."""
    indices, images = [], []
    for path in sorted(Path(directory).glob("adv_*.npz")):
        with np.load(path) as data:
            indices.append(data["index"])
            images.append(data["adversarial"])
    if not indices:
        return np.zeros(0, dtype=np.int64), np.zeros((0,), dtype=np.float32)
    index, image = np.concatenate(indices), np.concatenate(images)
    order = np.argsort(index, kind="stable")
    return index[order], image[order]


class Execution(BatchRunner):
    """The batch runner of one evaluation: shards over ``dist``, resumes from ``state_dir``, keeps pictures
    (``pictures`` samples) and, with ``adversarial_dir``, every sample's worst-case adversarial image.

    The defaults (one process, no state, no files) run exactly what a plain ``evaluate`` runs, plus the pictures.
    One Execution per ``evaluate`` call: it keeps that evaluation's pictures and buffer changes.
    """

    def __init__(self, dist: Distributed | None = None, state_dir: str | Path | None = None, resume: bool = False,
                 adversarial_dir: str | Path | None = None, pictures: int = PICTURES):
        self.dist = dist or Distributed()
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self.resume = resume
        self.adversarial_dir = Path(adversarial_dir) if adversarial_dir is not None else None
        self.gallery = Gallery(size=pictures)
        self.state: EvalState | None = None
        self.main_stage: str | None = None
        self.attack_names: list[str] = []
        self._model: nn.Module | None = None
        self._before: dict[str, Tensor] = {}
        self.changed_buffers: set[str] = set()
        self.left_training = False
        if resume and self.state_dir is None:
            raise UserError("--resume needs --resume-dir (where the killed evaluation kept its state)",
                            "pass --resume-dir DIR, the directory of the killed run")

    @contextmanager
    def process_group(self, device: torch.device | str) -> Iterator["Execution"]:
        """Join the ``torchrun`` process group for the evaluation (gloo on CPU, NCCL on CUDA); leave it after."""
        self.dist.start(torch.device(device), timeout=GATHER_TIMEOUT)
        try:
            yield self
        finally:
            self.dist.close()

    def begin(self, model: nn.Module, buffers_before: dict[str, Tensor], main_stage: str, attack_names: Sequence[str],
              class_names: Sequence[str], eps: float, norm: str, key: Callable[[], dict[str, Any]]) -> None:
        """Called by ``evaluate`` once the attacks are known: load (or refuse) the state, before any batch runs."""
        self._model, self._before = model, buffers_before
        self.main_stage, self.attack_names = main_stage, list(attack_names)
        self.gallery.class_names, self.gallery.eps, self.gallery.norm = list(class_names), float(eps), norm
        if self.adversarial_dir is not None:
            if self.adversarial_dir.exists() and not self.adversarial_dir.is_dir():
                raise UserError(f"--save-adversarial {self.adversarial_dir} is a file", "pass a directory")
            if not self.resume and self.adversarial_dir.is_dir() and any(self.adversarial_dir.glob("adv_*.npz")):
                raise UserError(f"--save-adversarial {self.adversarial_dir} already holds adversarial images",
                                "pass an empty directory (or --resume to continue the run that wrote them)")
        if self.state_dir is not None:
            self.state = EvalState.open(self.state_dir, key(), self.resume, self.dist.rank, self.dist.world_size)
            for extra in self.state.extras:
                self.gallery.merge([extra.get("gallery", {})])
                self.changed_buffers.update(extra.get("changed_buffers", []))
                self.left_training |= bool(extra.get("left_training", False))
        if self.state_dir is not None or self.adversarial_dir is not None:
            # every process looks at the directories before any writes there (a fresh run must not see a sibling's file)
            self.dist.barrier()

    # -- BatchRunner -------------------------------------------------------------------------------------------
    def plan(self, stage: str, batches: int) -> tuple[list[int], list[BatchResult]]:
        mine = owned_batches(batches, self.dist.rank, self.dist.world_size)
        carried = self.state.carried(stage, mine) if self.state is not None else []
        finished = {b.number for b in carried}
        return [b for b in mine if b not in finished], carried

    def finished(self, stage: str, result: BatchResult, x: Tensor, y: Tensor, worst: Tensor) -> None:
        if stage == self.main_stage:
            attacked = result.broken_by != NOT_ATTACKED
            self.gallery.offer(result.start, x, worst, y, result.clean_prediction, result.robust_prediction,
                               attacked, attacked & ~result.robust)
            if self.adversarial_dir is not None:
                write_adversarial(self.adversarial_dir, result, y, worst, self.attack_names)
        self._watch_buffers()
        if self.state is not None:
            self.state.record(stage, result)
            self.state.save({"gallery": self.gallery.to_state(), "changed_buffers": sorted(self.changed_buffers),
                             "left_training": self.left_training})

    def merge(self, stage: str, results: list[BatchResult]) -> list[BatchResult]:
        return list(itertools.chain.from_iterable(self.dist.gather(results)))

    # -- what evaluate asks at the end ---------------------------------------------------------------------------
    def _watch_buffers(self) -> None:
        if self._model is None:
            return
        self.left_training |= self._model.training
        for name, buffer in self._model.named_buffers():
            if name in self._before and not torch.equal(self._before[name], buffer):
                self.changed_buffers.add(name)

    def buffer_changes(self) -> tuple[list[str], bool]:
        """(buffers changed in any process, in the model's order; whether any process left eval mode)."""
        self._watch_buffers()
        gathered = self.dist.gather((sorted(self.changed_buffers), self.left_training))
        changed = set().union(*(set(names) for names, _ in gathered))
        return [name for name in self._before if name in changed], any(training for _, training in gathered)

    def pictures(self) -> Gallery:
        """The gallery over every process's candidates."""
        gathered = self.dist.gather(self.gallery.to_state())
        merged = Gallery(self.gallery.size, [], self.gallery.class_names, self.gallery.eps, self.gallery.norm)
        return merged.merge(gathered)
