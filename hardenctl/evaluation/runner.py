"""The batch runner of one evaluation, made of parts with one concern each.

:class:`EvalRunner` answers :func:`~hardenctl.evaluation.suite.run_suite`'s three questions by asking its parts:
which batches run here (:class:`~hardenctl.evaluation.sharding.Shards`), which an earlier, killed run finished
(:class:`~hardenctl.evaluation.resume.EvalState`), and what is kept after each batch (the :class:`Keeper` s: the
report's pictures, the ``--save-adversarial`` files, the buffer watch). ``evaluate`` builds one and passes it to
every ``run_suite`` of the evaluation.
"""

from __future__ import annotations

from typing import Any, Sequence

from torch import Tensor

from .resume import EvalState
from .sharding import Shards
from .suite import BatchResult, BatchRunner


class Keeper:
    """Something kept after every batch run here; what it returns from :meth:`to_state` is saved with the resume
    state and given back to :meth:`restore` when a killed run is resumed."""

    def finished(self, stage: str, result: BatchResult, x: Tensor, y: Tensor, worst: Tensor) -> None:
        """After each batch: ``x``, ``y`` the clean batch, ``worst`` the point each sample was last scored at."""

    def to_state(self) -> dict[str, Any]:
        return {}

    def restore(self, extra: dict[str, Any]) -> None:
        """Take over what a killed run's state file kept (called once per file)."""


class EvalRunner(BatchRunner):
    """Shards over ``torchrun`` processes, carries the batches a resumed ``state`` holds, and tells ``keepers``
    after every batch (then saves the state, so a kill loses at most the batch in flight)."""

    def __init__(self, shards: Shards | None = None, state: EvalState | None = None, keepers: Sequence[Keeper] = ()):
        self.shards = shards or Shards()
        self.state = state
        self.keepers = list(keepers)
        # batches this process finished in this run, by stage: a sequential run asks for a longer prefix of the same
        # batches every round, and what an earlier round finished is carried, not attacked again
        self.memo: dict[str, dict[int, BatchResult]] = {}
        if state is not None:
            for extra in state.extras:
                for keeper in self.keepers:
                    keeper.restore(extra)

    def plan(self, stage: str, batches: int) -> tuple[list[int], list[BatchResult]]:
        mine = self.shards.mine(batches)
        memo = self.memo.get(stage, {})
        carried = [memo[b] for b in mine if b in memo]
        if self.state is not None:
            carried += self.state.carried(stage, [b for b in mine if b not in memo])
        finished = {b.number for b in carried}
        return [b for b in mine if b not in finished], carried

    def finished(self, stage: str, result: BatchResult, x: Tensor, y: Tensor, worst: Tensor) -> None:
        self.memo.setdefault(stage, {})[result.number] = result
        for keeper in self.keepers:
            keeper.finished(stage, result, x, y, worst)
        if self.state is not None:
            self.state.record(stage, result)
            extra: dict[str, Any] = {}
            for keeper in self.keepers:
                extra.update(keeper.to_state())
            self.state.save(extra)

    def merge(self, stage: str, results: list[BatchResult]) -> list[BatchResult]:
        return self.shards.gather_batches(results)
