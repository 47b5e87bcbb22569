"""Which batches this ``torchrun`` process runs, and how every process gets every batch's result.

``torchrun --nproc_per_node=N -m hardenctl eval ...`` splits every stage of an evaluation (the suite, each ε of a
sweep, the ε = 0.5 check) by whole batches: batch ``b`` runs on rank ``b mod N``. A batch is seeded by its start
index, so it gives the same per-sample results wherever it runs; at the end of a stage every process gathers all
batch results and assembles them by sample index (counts summed, norms maxed: never rates averaged), so the report
is identical to a single-process run with the same seed and batch size.
"""

from __future__ import annotations

import itertools
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Iterator

import torch

from ..distributed import Distributed
from .suite import BatchResult

# A stage ends with every process waiting for the slowest one: allow for a few slow batches of a large model.
GATHER_TIMEOUT = timedelta(hours=4)


def owned_batches(batches: int, rank: int, world_size: int) -> list[int]:
    """The batch numbers rank ``rank`` of ``world_size`` runs: ``b mod world_size == rank``."""
    return list(range(rank, batches, world_size))


@dataclass
class Shards:
    """This process's share of every stage (one process: all of it) and the gathering of the others' shares."""

    dist: Distributed = field(default_factory=Distributed)

    def mine(self, batches: int) -> list[int]:
        return owned_batches(batches, self.dist.rank, self.dist.world_size)

    def gather_batches(self, results: list[BatchResult]) -> list[BatchResult]:
        """Every process's batch results (this one's included), on every process."""
        return list(itertools.chain.from_iterable(self.dist.gather(results)))

    def gather(self, value: Any) -> list[Any]:
        return self.dist.gather(value)

    def barrier(self) -> None:
        self.dist.barrier()

    @contextmanager
    def joined(self, device: torch.device | str) -> Iterator["Shards"]:
        """Join the ``torchrun`` process group for the evaluation (gloo on CPU, NCCL on CUDA; a running group is
        used as it is) and leave it after, if it was joined here."""
        self.dist.start(torch.device(device), timeout=GATHER_TIMEOUT)
        try:
            yield self
        finally:
            self.dist.close()
