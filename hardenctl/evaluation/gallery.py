"""The report's pictures: the main stage's candidates, kept the same whichever process ran which batch."""

from __future__ import annotations

from typing import Any, Sequence

from torch import Tensor

from ..report import Gallery
from .runner import Keeper
from .sharding import Shards
from .suite import NOT_ATTACKED, BatchResult


class PictureKeeper(Keeper):
    """Offers every main-stage batch to a :class:`~hardenctl.report.Gallery` of ``size`` pictures."""

    def __init__(self, size: int, stage: str, class_names: Sequence[str], eps: float, norm: str):
        self.stage = stage
        self.sample_ids: Tensor | None = None  # --sequential: the evaluated set's index of each row of the run's order
        self.gallery = Gallery(size=size)
        self.gallery.class_names, self.gallery.eps, self.gallery.norm = list(class_names), float(eps), norm

    def finished(self, stage: str, result: BatchResult, x: Tensor, y: Tensor, worst: Tensor) -> None:
        if stage == self.stage:
            attacked = result.broken_by != NOT_ATTACKED
            where = (
                result.start
                if self.sample_ids is None
                else self.sample_ids[result.start : result.start + len(result)].tolist()
            )
            self.gallery.offer(
                where,
                x,
                worst,
                y,
                result.clean_prediction,
                result.robust_prediction,
                attacked,
                attacked & ~result.robust,
            )

    def to_state(self) -> dict[str, Any]:
        return {"gallery": self.gallery.to_state()}

    def restore(self, extra: dict[str, Any]) -> None:
        self.gallery.merge([extra.get("gallery", {})])

    def pictures(self, shards: Shards) -> Gallery:
        """The gallery over every process's candidates."""
        gathered = shards.gather(self.gallery.to_state())
        merged = Gallery(self.gallery.size, [], self.gallery.class_names, self.gallery.eps, self.gallery.norm)
        return merged.merge(gathered)
