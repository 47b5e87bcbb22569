"""Helpers shared by test modules (a uniquely named module: `conftest` is ambiguous across folders)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from hardenctl.evaluation.resume import batch_numbers, state_files
from hardenctl.models.checkpoint import read_raw
from hardenctl.models.metadata import decode_value

CIFAR_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


class BufferWriter(nn.Module):
    """A broken model that updates a buffer on forward passes even in eval mode: on every pass, or (``only_attacked``)
    only on passes with gradients on, so a clean pass leaves it alone."""

    def __init__(self, model, only_attacked: bool = False):
        super().__init__()
        self.model, self.info, self.only_attacked = model, model.info, only_attacked
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, x):
        if x.requires_grad or not self.only_attacked:
            self.calls += 1
        return self.model(x)


def timeless(report: dict) -> dict:
    """A report's JSON without what wall time changes (``seconds``, and each attack's ``work.seconds``): what two runs
    of the same evaluation must agree on exactly."""
    out = {k: v for k, v in report.items() if k != "seconds"}
    if "work" in out:
        out["work"] = {name: {k: v for k, v in w.items() if k != "seconds"} for name, w in out["work"].items()}
    return out


def read_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Weights (DDP/compile prefixes removed) and metadata of a checkpoint, JSON values decoded and the rest left as
    strings, nothing validated: the file as the loader reads it, for tests that rewrite a checkpoint's header."""
    state, raw = read_raw(Path(path))
    return state, {key: decode_value(value) for key, value in raw.items()}


def read_adversarial(directory: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Every sample ``--save-adversarial`` wrote: (indices, images) in index order, from the directory's ``.npz``."""
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


def finished_batches(directory: str | Path) -> dict[str, int]:
    """Finished batches per stage over every ``--resume-dir`` state file of ``directory`` (tests poll it)."""
    counts: dict[str, set[int]] = {}
    for path in state_files(directory):
        for stage, numbers in batch_numbers(path).items():
            counts.setdefault(stage, set()).update(numbers)
    return {stage: len(numbers) for stage, numbers in counts.items()}


def torchrun(
    script: str, folder: Path, nproc: int = 2, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run ``script`` (Python source, dedented here) as ``folder/worker.py`` in ``nproc`` processes under
    ``torch.distributed.run --standalone``, one thread each (``env`` adds variables); stdout and stderr captured."""
    worker = Path(folder) / "worker.py"
    worker.write_text(textwrap.dedent(script))
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", str(worker)],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
        timeout=timeout,
    )


def ddp_harden_args(epochs: int) -> list[str]:
    """The harden run the DDP comparisons share (tests/test_harden.py, tests/test_torchrun_nodes.py): a GroupNorm
    model's setting at lr 1e-4 with crop-flip augmentation, where float summation order across processes stays small
    and a rank given another rank's crops would not."""
    return (
        f"--recipe pgd-at --data digits-train --epochs {epochs} --batch-size 128 --lr 0.0001 --set attack_steps=2 "
        "--set eps=0.1 --set attack_alpha=0.05 --set augment=crop-flip --set crop_padding=1 --set monitor_n=32 "
        "--eval-n 16 --suite quick --eps 0.1 --device cpu --quiet"
    ).split()
