"""The process group under ``torchrun``: rank, world size, collectives; one process without it.

Shared by ``harden`` (DDP training) and ``eval`` (sharded evaluation): gloo for CPU processes, NCCL for one
GPU per process. Multi-node runs need nothing more than torchrun's rendezvous environment variables.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch

from .errors import UserError


@dataclass
class Distributed:
    """Rank and world size under ``torchrun`` (one process without it)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> "Distributed":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        return cls(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))

    def start(self, device: torch.device, timeout: timedelta | None = None) -> None:
        """Join the process group (gloo on CPU, NCCL on CUDA) unless one is already running."""
        import torch.distributed as dist

        if self.world_size > 1 and not dist.is_initialized():
            if device.type == "cuda":
                torch.cuda.set_device(device)  # NCCL collectives use the current device
            options = {} if timeout is None else {"timeout": timeout}
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo", **options)
            self.owns_group = True

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over all processes."""
        if self.world_size == 1:
            return values
        import torch.distributed as dist

        tensor = torch.tensor(values, dtype=torch.float64)
        if dist.get_backend() == "nccl":
            tensor = tensor.cuda()
        dist.all_reduce(tensor)
        return tensor.cpu().tolist()

    def gather(self, value: Any) -> list[Any]:
        """Every process's ``value`` (picklable), in rank order, on every process."""
        if self.world_size == 1:
            return [value]
        import torch.distributed as dist

        values: list[Any] = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values

    def barrier(self) -> None:
        if self.world_size > 1:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()
            self.owns_group = False


def rank_device(device: str, dist: Distributed | None = None) -> str:
    """The device a process works on: under torchrun a CUDA request (or ``auto`` with CUDA) means ``cuda:LOCAL_RANK``,
    one GPU per process; anything else, and one process, as asked."""
    dist = dist or Distributed.from_env()
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
