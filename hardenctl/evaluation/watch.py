"""The buffer watch: attacks must leave the model in eval mode with every buffer (BN statistics) unchanged.

Checked after every batch (a resumed run also inherits what a killed one saw) and over every process at the end;
:func:`~hardenctl.evaluation.checks.buffers_check` turns the answer into the report's check.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .runner import Keeper
from .sharding import Shards
from .suite import BatchResult


def snapshot_buffers(model: nn.Module) -> dict[str, Tensor]:
    """A copy of every buffer (BN statistics), to show an evaluation left them unchanged."""
    return {name: buf.detach().clone() for name, buf in model.named_buffers()}


class BufferWatch(Keeper):
    """Compares ``model``'s buffers with ``before`` after every batch and notes whether it left eval mode."""

    def __init__(self, model: nn.Module, before: dict[str, Tensor]):
        self.model, self.before = model, before
        self.changed: set[str] = set()
        self.left_training = False

    def look(self) -> None:
        self.left_training |= self.model.training
        for name, buffer in self.model.named_buffers():
            if name in self.before and not torch.equal(self.before[name], buffer):
                self.changed.add(name)

    def finished(self, stage: str, result: BatchResult, x: Tensor, y: Tensor, worst: Tensor) -> None:
        self.look()

    def to_state(self) -> dict[str, Any]:
        return {"changed_buffers": sorted(self.changed), "left_training": self.left_training}

    def restore(self, extra: dict[str, Any]) -> None:
        self.changed.update(extra.get("changed_buffers", []))
        self.left_training |= bool(extra.get("left_training", False))

    def changes(self, shards: Shards) -> tuple[list[str], bool]:
        """(buffers changed in any process, in the model's order; whether any process left eval mode)."""
        self.look()
        gathered = shards.gather((sorted(self.changed), self.left_training))
        changed = set().union(*(set(names) for names, _ in gathered))
        return [name for name in self.before if name in changed], any(training for _, training in gathered)
