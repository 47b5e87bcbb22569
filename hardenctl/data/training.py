"""Training samples whose augmentation is a pure function of (seed, epoch, sample index).

timm's train transforms draw from python ``random``, numpy and torch's global generators. Seeding all
three from (seed, epoch, index) just before each sample is transformed makes an epoch repeat exactly
after a kill and resume, whatever the number of workers or processes, and whichever worker gets
which sample. The generators' previous states are restored afterwards, so transforming in-process
does not disturb the caller's own random stream. The epoch's order and batches are the engine's
(:func:`hardenctl.training.batches.epoch_batches`).
"""

from __future__ import annotations

import random
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import Tensor


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 64-bit seed mixing the three (numpy's SeedSequence: nearby triples give unrelated seeds).

    Args:
        seed: the run's seed (up to 64 bits).
        epoch: the epoch.
        index: the sample's index in the dataset.
    """
    words = np.random.SeedSequence([seed & 0xFFFFFFFF, seed >> 32 & 0xFFFFFFFF, epoch, index]).generate_state(2)
    return int(words[0]) << 32 | int(words[1])


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed python ``random``, numpy and torch's CPU generator; restore their states on exit.

    torch's own :func:`torch.random.fork_rng` saves and restores torch's streams (CPU only here: the caller's CUDA
    streams stay untouched); timm's transforms also draw from ``random`` and numpy, which it does not cover.

    Args:
        seed: the seed for all three generators (numpy gets its low 32 bits).
    """
    saved = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        random.seed(seed)
        np.random.seed(seed & 0xFFFFFFFF)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(saved[0])
            np.random.set_state(saved[1])


class TrainDataset(torch.utils.data.Dataset):
    """``dataset[(epoch, i)]`` (or ``dataset[i]`` at :attr:`epoch`) → (transform(image i), label i).

    ``source`` is any dataset with ``image(i)`` (PIL) and ``y``: a :class:`~.folders.FolderDataset` or
    an in-memory :class:`~.arrays.ArrayDataset`. A sampler that yields ``(epoch, i)`` keys carries the
    epoch into workers, so nothing has to be set on copies of the dataset.
    """

    def __init__(self, source: Any, transform: Callable[[Any], Tensor], seed: int = 0, epoch: int = 0):
        self.source, self.transform, self.seed, self.epoch = source, transform, int(seed), int(epoch)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[Tensor, int]:
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        image = self.source.image(int(index))
        with seeded(sample_seed(self.seed, int(epoch), int(index))):
            x = self.transform(image)
        return x, int(self.source.y[int(index)])

    def forget_handles(self) -> None:
        """Called in each new worker: a tar source's open handle must not be shared across processes."""
        reader = getattr(self.source, "reader", None)
        if reader is not None:
            from .readers import forget_open_tars

            forget_open_tars(reader)
