"""One DataLoader per pass: decoding in worker processes, batch by batch, so memory stays flat in dataset size.

Each pass builds its own loader (no persistent workers): a dataset copied into workers can never go
stale, and a killed run restarts with nothing to restore but (seed, epoch, position).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import torch
from torch.utils.data import DataLoader

MAX_WORKERS = 8  # decoding scales to about here; more mostly costs memory


def default_workers(cores: int | None = None) -> int:
    """This process's share of the cores, at most :data:`MAX_WORKERS`.

    Under torchrun every local rank starts its own workers, so each takes cores / LOCAL_WORLD_SIZE: N ranks with
    one loader of all the node's cores each would start N times as many decoding processes as there are cores.

    Args:
        cores: the cores this node's ranks share; None: those this process may run on (its CPU affinity).
    """
    if cores is None:
        cores = available_cores()
    try:
        local_ranks = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        local_ranks = 1
    return max(1, min(cores // local_ranks, MAX_WORKERS))


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the system has one, else every core)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def resolve_workers(workers: int | None) -> int:
    """``None`` → :func:`default_workers`; 0 decodes in this process.

    Args:
        workers: ``--workers``: a count, or None for :func:`default_workers`.
    """
    if workers is None:
        return default_workers()
    if workers < 0:
        from ..errors import UserError

        raise UserError(f"--workers must be 0 or more, got {workers}", "pass --workers 0 to decode in-process")
    return int(workers)


def _init_worker(worker_id: int) -> None:
    """Workers decode one image each at a time: one thread apiece, and open their own tar handles."""
    torch.set_num_threads(1)
    info = torch.utils.data.get_worker_info()
    forget = getattr(info.dataset, "forget_handles", None) if info is not None else None
    if forget is not None:
        forget()


def make_loader(
    dataset: torch.utils.data.Dataset,
    batch_size: int,
    *,
    positions: Sequence[Any],
    workers: int | None = None,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    device: torch.device | str | None = None,
    seed: int = 0,
    drop_last: bool = False,
) -> DataLoader:
    """Batches of ``dataset[p]`` for ``p`` in ``positions``, in that order.

    Workers beyond the number of batches would only start and exit, so at most that many are used.
    Samples that need randomness seed themselves (see ``TrainDataset``), so results never depend on the
    worker count. Batches are pinned when they are headed for CUDA.

    Args:
        dataset: a map-style dataset.
        batch_size: samples per batch.
        positions: the indices of ``dataset`` to load, in order.
        workers: DataLoader processes (None: :func:`default_workers`; 0: in this process).
        collate_fn: makes a batch of a list of samples (None: torch's default).
        device: where batches go (pinned for CUDA); None: CUDA when there is one.
        seed: the workers' base seed (torch seeds ``random``, numpy and torch in each worker from it).
        drop_last: drop a last, short batch.
    """
    batches = -(-len(positions) // batch_size) if len(positions) else 0
    workers = min(resolve_workers(workers), batches)
    if device is None:
        cuda = torch.cuda.is_available()
    else:
        cuda = torch.device(device).type == "cuda"
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=positions,
        num_workers=workers,
        collate_fn=collate_fn,
        pin_memory=cuda,
        drop_last=drop_last,
        worker_init_fn=_init_worker if workers else None,
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=False,
    )
