"""Helpers shared by test modules (a uniquely named module: `conftest` is ambiguous across folders)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

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
