"""Random numbers per image: an image's random starts and search moves depend on its own index and the seed alone.

Why: a sequential gate (``hardenctl eval --sequential``) attacks the images in a random order and in batches of
whatever images the order puts together. Its guarantee (the early verdict agrees with the full run's) holds for a
fixed population of per-image outcomes, so an image's outcome must not depend on which images share its batch or on
how many of them are still being attacked. With batch-shaped draws from the global generator it would. Here every
image has its own counter-based stream: draw ``k`` of image ``i`` is a hash of (seed, i, k, element), computed for
the whole batch at once with integer tensor arithmetic (no Python loop over images, no state but a draw counter per
image). Without ``--sequential`` the attacks keep the global generator, so every other evaluation is unchanged.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

_MASK = 0xFFFFFFFF


def _mix(x: Tensor) -> Tensor:
    """A 32-bit integer hash (a well-mixed xorshift-multiply finaliser), on int64 tensors holding 32-bit values."""
    x = x & _MASK
    x = (x ^ (x >> 16)) * 0x7FEB352D & _MASK
    x = (x ^ (x >> 15)) * 0x846CA68B & _MASK
    return x ^ (x >> 16)


class SampleStreams:
    """One stream per image of a batch. ``ids`` are the images' indices in the evaluated set; :meth:`rows` gives the
    streams of some of them (an attack's active subset) sharing the same counters."""

    def __init__(self, seed: int, ids: Tensor, counters: Tensor | None = None, rows: Tensor | None = None):
        self.seed = int(seed)
        self.ids = ids.to(torch.int64).cpu()
        self.counters = counters if counters is not None else torch.zeros(len(self.ids), dtype=torch.int64)
        self.index = rows if rows is not None else torch.arange(len(self.ids))

    def __len__(self) -> int:
        return len(self.index)

    def rows(self, rows: Tensor) -> "SampleStreams":
        """The streams of ``rows`` (positions in this view), drawing from and advancing the same counters."""
        return SampleStreams(self.seed, self.ids, self.counters, self.index[rows.cpu()])

    def uniform(
        self, shape: tuple[int, ...], device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
    ) -> Tensor:
        """U[0, 1) of shape ``(len(self), *shape)``: row r from image ``ids[index[r]]``'s stream, its next draw."""
        per_image = math.prod(shape)
        images = self.ids[self.index]
        draws = self.counters[self.index]
        self.counters[self.index] += 1
        key = _mix(_mix(images + _mix(torch.tensor(self.seed, dtype=torch.int64))) ^ draws)
        element = torch.arange(per_image, dtype=torch.int64)
        bits = _mix(key[:, None] * 0x9E3779B1 + element[None, :])
        values = (bits >> 8).to(torch.float64) / float(1 << 24)  # 24 random bits: exact in float32
        return values.view(len(self), *shape).to(device=device, dtype=dtype)

    def normal(
        self, shape: tuple[int, ...], device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
    ) -> Tensor:
        """N(0, 1) by Box–Muller from two uniform draws."""
        u1 = self.uniform(shape, dtype=torch.float64).clamp_min(1e-12)
        u2 = self.uniform(shape, dtype=torch.float64)
        return ((-2 * u1.log()).sqrt() * torch.cos(2 * math.pi * u2)).to(device=device, dtype=dtype)

    def integers(self, high: int, shape: tuple[int, ...] = (), device: torch.device | str = "cpu") -> Tensor:
        """Uniform integers in [0, high)."""
        return (
            (self.uniform(shape or (1,), dtype=torch.float64) * high)
            .floor()
            .clamp_max(high - 1)
            .to(device=device, dtype=torch.int64)
            .view(len(self), *shape)
        )
