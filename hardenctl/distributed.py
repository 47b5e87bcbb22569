"""The process group under ``torchrun``: rank, world size, collectives; one process without it.

Shared by ``harden`` (DDP training) and ``eval`` (sharded evaluation): gloo for CPU processes, NCCL for one
GPU per process. Multi-node runs need nothing more than torchrun's rendezvous environment variables.

Restarts (``torchrun --max-restarts``): the workers of every attempt share the agent's one TCP store, which still
holds the addresses the dead attempt's processes published; a process group built on it straight away can read a dead
process's address and fail in gloo's ``connectFullMesh`` ("Connection refused"). So each attempt agrees on a fresh
key prefix first (:func:`attempt_store`) and builds its group inside it.
"""

from __future__ import annotations

import os
import secrets
import time
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
            options: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
            if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":  # the agent's store, shared by every attempt
                store = dist.TCPStore(
                    os.environ["MASTER_ADDR"],
                    int(os.environ["MASTER_PORT"]),
                    self.world_size,
                    is_master=False,
                    timeout=timeout or timedelta(minutes=10),
                )
                options.update(
                    store=attempt_store(store, self.rank, self.world_size), rank=self.rank, world_size=self.world_size
                )
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

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` (picklable), on every process: what only rank 0's disk can say (its checkpoints)."""
        if self.world_size == 1:
            return value
        import torch.distributed as dist

        values = [value]
        dist.broadcast_object_list(values, src=0)
        return values[0]

    def barrier(self) -> None:
        if self.world_size > 1:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()
            self.owns_group = False


def attempt_store(store: Any, rank: int, world_size: int, poll_s: float = 0.01) -> Any:
    """``store`` under a key prefix that only this attempt's processes share.

    A restart count cannot name the attempt: under ``--nnodes`` > 1 an agent whose workers were still healthy restarts
    them for the membership change without counting it, so the nodes' ``TORCHELASTIC_RESTART_COUNT`` differ. Instead
    rank 0 draws a nonce, and every other rank proves it is of this attempt by a token of its own: it posts the token,
    waits for rank 0's answer under a key named by that token (no dead attempt can have written it) and confirms under
    a key named by the nonce (nor that one). Rank 0 answers whatever token it reads, a dead rank's included, until the
    confirmation comes.
    """
    import torch.distributed as dist

    if rank == 0:
        nonce = secrets.token_hex(8)
        for other in range(1, world_size):
            while True:
                token = store.get(f"hardenctl/hello/{other}").decode()  # waits for the key (the store's timeout)
                store.set(f"hardenctl/answer/{other}/{token}", nonce)
                if store.check([f"hardenctl/joined/{nonce}/{other}"]):
                    break
                time.sleep(poll_s)
    else:
        token = secrets.token_hex(8)
        store.set(f"hardenctl/hello/{rank}", token)
        nonce = store.get(f"hardenctl/answer/{rank}/{token}").decode()
        store.set(f"hardenctl/joined/{nonce}/{rank}", "1")
    return dist.PrefixStore(f"hardenctl/attempt/{nonce}", store)


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
            raise UserError(
                f"torchrun started local rank {dist.local_rank} but this node has {count} GPU(s)",
                f"pass --nproc_per_node={max(count, 1)} (one process per GPU), or --device cpu",
            )
        return f"cuda:{dist.local_rank}"
    return device
