"""Helpers shared by test modules (a uniquely named module: `conftest` is ambiguous across folders)."""

from __future__ import annotations

import json
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
