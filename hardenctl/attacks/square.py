"""Square Attack (Andriushchenko et al., ECCV 2020): random search on the logit margin.

It never asks for a gradient, so it cannot be fooled by a model that hides or breaks
its gradients; if Square beats the white-box attacks, those attacks were masked. Each
iteration proposes a change confined to one random square window and keeps it only if
the margin (runner-up logit − true logit) grows. Windows start large (a fraction
``p_init`` of the image) and shrink on a fixed schedule.

Matches the reference as AutoAttack runs it (``autoattack/square.py`` with
``resc_schedule=False``): the window fraction halves after iterations 10, 50, 200, 500,
1000, 2000, 4000, 6000 and 8000 whatever the budget, so at 5000 queries on 32×32 images
L∞ windows end at 3×3, not 1×1; the same stripe (L∞) and pattern-grid (L2) starts, margin
loss, strict-improvement acceptance, window sizes, and L2 update — including the window
mass ``norms_windows`` taken per image across channels (the original Square repository
and ``pyautoattack`` 0.2.0 take it per channel). ``rescale_schedule=True`` stretches the
schedule over the budget instead (the reference class's own default).

Deliberate differences, none weakening it: windows, signs and the L2 pattern orientation
are drawn per image (the reference draws one for the whole batch; the paper's L∞
algorithm is per image); window offsets cover every valid position (the reference never
draws the last row or column offset); the initial query counts against ``queries`` (the
reference spends ``queries + 1``); the clean point is not queried, so every point given
is attacked, and a zero margin (a tie) is not counted as fooled; for images under ~25
pixels the L2 start grid is centred rather than cut off at the border; unfooled points
get their highest-margin point across restarts rather than ``x``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import UserError
from .base import Attack
from .losses import margin
from .streams import SampleStreams

_SCHEDULE = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)  # p halves after each iteration


def square_fraction(p_init: float, it: int, queries: int, rescale: bool = False) -> float:
    """Fraction of pixels the window covers at iteration ``it`` (0-based, after the first query).

    Without ``rescale`` (AutoAttack's setting) the breakpoints are absolute iteration
    counts; with it they are read as fractions of a 10 000-query budget.

    Args:
        p_init: the fraction at the start (0.8 in AutoAttack).
        it: the iteration, 0-based, counted after the first query.
        queries: the run's query budget (only read with ``rescale``).
        rescale: read the breakpoints as fractions of a 10 000-query budget.
    """
    t = int(it / queries * 10000) if rescale else it
    return p_init / 2 ** sum(t > m for m in _SCHEDULE)


def window_side(p: float, h: int, w: int, norm: str) -> int:
    """Side of the square covering a fraction ``p`` of an h×w image, rounded as the reference.

    L2 windows are at least 3 and odd, so the two-centre pattern has a middle row.

    Args:
        p: fraction of the image's pixels the window covers.
        h: image height.
        w: image width.
        norm: ``linf`` or ``l2`` (L2 windows are at least 3 and odd).
    """
    s = int(round(math.sqrt(p * h * w)))
    if norm == "linf":
        return min(max(s, 1), h, w)
    s = max(s, 3)
    return min(s + (s % 2 == 0), h, w)


def _window(
    n: int, h: int, w: int, s: int, device, streams: SampleStreams | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Index tensors (batch, rows, cols) for one random s×s window per image (from each image's own stream when
    ``streams`` is given).

    ``t[b, :, r, c]`` then has shape (n, s, s, C).
    """
    if streams is None:
        top = torch.randint(0, h - s + 1, (n,), device=device)
        left = torch.randint(0, w - s + 1, (n,), device=device)
    else:
        top, left = streams.integers(h - s + 1, (), device), streams.integers(w - s + 1, (), device)
    ar = torch.arange(s, device=device)
    batch = torch.arange(n, device=device)[:, None, None]
    return batch, (top[:, None] + ar)[:, :, None], (left[:, None] + ar)[:, None, :]


def _rings(a: int, b: int) -> Tensor:
    """a×b block of concentric rectangles: weight Σ_{k ≥ ring} 1/(k+1)², unit L2 norm."""
    if a == 0:
        return torch.zeros(0, b)
    rows = (torch.arange(a) - a // 2).abs()
    cols = (torch.arange(b) - b // 2).abs()
    ring = torch.maximum(rows[:, None], cols[None, :])
    n_rings = max(a // 2, b // 2) + 1
    tail = (1.0 / (torch.arange(n_rings) + 1.0) ** 2).flip(0).cumsum(0).flip(0)
    block = tail[ring]
    return block / block.norm()


def _pattern(s: int) -> Tensor:
    """The L2 update pattern: + rings on the top half, − rings on the bottom, unit norm.

    Mass concentrated at two centres of opposite sign changes the image a lot per unit
    of L2 budget, which is what makes the L2 search efficient.
    """
    top = s // 2
    p = torch.cat([_rings(top, s), -_rings(s - top, s)], dim=0)
    return p / p.norm()


class Square(Attack):
    """Score-based random search under an L∞ or L2 budget.

    Args:
        queries: model queries per point and restart (the initial one included).
        p_init: initial fraction of pixels a window covers (0.8 as in AutoAttack).
        restarts: fresh runs, each only on the points not yet fooled.
        rescale_schedule: stretch the window schedule over ``queries`` (off, as in AutoAttack:
            rescaling shrinks windows to single pixels long before a 5000-query budget ends).
    """

    name = "square"

    def __init__(
        self,
        eps: float,
        norm: str = "linf",
        eot_samples: int = 1,
        queries: int = 5000,
        p_init: float = 0.8,
        restarts: int = 1,
        rescale_schedule: bool = False,
    ):
        super().__init__(eps, norm, eot_samples)
        if queries < 1:
            raise UserError(f"queries must be >= 1, got {queries}", "pass e.g. queries=5000")
        if not 0 < p_init <= 1:
            raise UserError(f"p_init must be in (0, 1], got {p_init}", "pass e.g. p_init=0.8")
        self.queries = int(queries)
        self.p_init = float(p_init)
        self.restarts = max(1, int(restarts))
        self.rescale_schedule = bool(rescale_schedule)

    def settings(self) -> dict[str, Any]:
        return {
            **super().settings(),
            "queries": self.queries,
            "p_init": self.p_init,
            "restarts": self.restarts,
            "rescale_schedule": self.rescale_schedule,
        }

    def _margin(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """Margins; under a reduced-precision search a claimed success (> 0) is re-measured in full precision."""
        found = margin(self.predict(model, x), y)
        if self.search_dtype is not None and bool((found > 0).any()):
            rows = (found > 0).nonzero().squeeze(1)
            found[rows] = margin(self.exact_predict(model, x[rows]), y[rows])
        return found

    @torch.no_grad()
    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        if x.dim() != 4:
            raise UserError(f"square attack needs NCHW images, got shape {tuple(x.shape)}", "pass a 4-D batch")
        x_out = x.clone()
        best = torch.full((x.shape[0],), float("-inf"), device=x.device)
        fooled = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        for _ in range(self.restarts):
            idx = (~fooled).nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            x_run, m_run = self._run(model, x[idx], y[idx], None if self.streams is None else self.streams.rows(idx))
            better = m_run > best[idx]
            x_out[idx[better]] = x_run[better]
            best[idx[better]] = m_run[better]
            fooled[idx] = m_run > 0
        self.report_broken(fooled)
        return x_out

    def _run(
        self, model: nn.Module, x: Tensor, y: Tensor, streams: SampleStreams | None = None
    ) -> tuple[Tensor, Tensor]:
        """One search; returns the best point per image and its margin (> 0: fooled). ``streams``: the rows' own
        random streams (``--sequential``), else the global generator."""
        n, c, h, w = x.shape
        x_best = self.project(x + self._init_delta(x, streams), x)
        m_best = self._margin(model, x_best, y)
        for it in range(self.queries - 1):
            active = (m_best <= 0).nonzero().squeeze(1)
            if active.numel() == 0:
                break
            p = square_fraction(self.p_init, it, self.queries, self.rescale_schedule)
            s = window_side(p, h, w, self.norm)
            x_a, x_cur = x[active], x_best[active]
            active_streams = None if streams is None else streams.rows(active)
            if self.norm == "linf":
                x_new = self._propose_linf(x_a, x_cur, s, active_streams)
            else:
                x_new = self._propose_l2(x_a, x_cur, s, active_streams)
            m_new = self._margin(model, x_new, y[active])
            better = m_new > m_best[active]  # strict: a tie is not progress
            x_best[active[better]] = x_new[better]
            m_best[active[better]] = m_new[better]
        return x_best, m_best

    def _init_delta(self, x: Tensor, streams: SampleStreams | None = None) -> Tensor:
        """L∞: ±ε vertical stripes (one sign per column and channel), which already move the
        margin a lot. L2: a grid of ± patterns scaled to norm ε."""
        n, c, h, w = x.shape
        if self.norm == "linf":
            return self.eps * _signs(x, (n, c, 1, w), streams).expand_as(x)
        s = max(h // 5, 1)
        rows, cols = h // s, w // s
        top, left = (h - rows * s) // 2, (w - cols * s) // 2
        delta = torch.zeros_like(x)
        for i in range(rows):
            for j in range(cols):
                sub = delta[:, :, top + i * s : top + (i + 1) * s, left + j * s : left + (j + 1) * s]
                sub += _patterns(x, s, streams)[:, None] * _signs(x, (n, c, 1, 1), streams)
        norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
        return self.eps * delta / norms.view(-1, 1, 1, 1)

    def _propose_linf(self, x: Tensor, x_cur: Tensor, s: int, streams: SampleStreams | None = None) -> Tensor:
        """Set one s×s window per image to a fresh ±ε value per channel (a ±2ε jump, then projected)."""
        n, c, h, w = x.shape
        b, r, col = _window(n, h, w, s, x.device, streams)
        x_new = x_cur.clone()
        jump = 2 * self.eps * _signs(x, (n, 1, 1, c), streams)
        x_new[b, :, r, col] = x_cur[b, :, r, col] + jump
        return self.project(x_new, x)

    def _propose_l2(self, x: Tensor, x_cur: Tensor, s: int, streams: SampleStreams | None = None) -> Tensor:
        """The paper's L2 step: move the perturbation mass of two s×s windows into one of them,
        redrawn as a ± pattern plus the old content, topped up with unused budget, then
        rescale the whole perturbation to norm ε.

        Each channel of the new window gets norm sqrt(spare / C + W²) with W the mass of both
        windows over *all* channels (as the AutoAttack reference), which moves more mass into
        the new window than a per-channel W would.
        """
        n, c, h, w = x.shape
        delta = x_cur - x
        w1, w2 = _window(n, h, w, s, x.device, streams), _window(n, h, w, s, x.device, streams)

        old = delta[w1[0], :, w1[1], w1[2]].permute(0, 3, 1, 2)  # (n, c, s, s)
        old_norm = old.flatten(2).norm(dim=2)[..., None, None]
        both = torch.zeros(n, 1, h, w, device=x.device, dtype=x.dtype)
        both[w1[0], :, w1[1], w1[2]] = 1.0
        both[w2[0], :, w2[1], w2[2]] = 1.0
        window_norm = (delta * both).flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        image_norm = delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)

        new = _patterns(x, s, streams)[:, None] * _signs(x, (n, c, 1, 1), streams) + old / (old_norm + 1e-12)
        spare = (self.eps**2 - image_norm**2).clamp_min(0) / c
        new = new / (new.flatten(2).norm(dim=2)[..., None, None] + 1e-12) * (spare + window_norm**2).sqrt()

        delta = delta.clone()
        delta[w2[0], :, w2[1], w2[2]] = 0.0
        delta[w1[0], :, w1[1], w1[2]] = new.permute(0, 2, 3, 1)
        norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
        return self.project(x + self.eps * delta / norms.view(-1, 1, 1, 1), x)


def _patterns(x: Tensor, s: int, streams: SampleStreams | None = None) -> Tensor:
    """One L2 pattern per image of the batch, each randomly transposed: shape (n, s, s)."""
    pat = _pattern(s).to(x)
    if streams is None:
        flip = torch.rand(x.shape[0], device=x.device) < 0.5
    else:
        flip = streams.uniform((), x.device).view(-1) < 0.5
    return torch.where(flip.view(-1, 1, 1), pat.t(), pat)


def _signs(x: Tensor, shape: tuple[int, ...], streams: SampleStreams | None = None) -> Tensor:
    """Uniform random ±1 of the given shape (one row per image), on x's device and dtype."""
    if streams is None:
        return torch.randint(0, 2, shape, device=x.device).to(x.dtype) * 2 - 1
    return (streams.uniform(tuple(shape[1:]), x.device) < 0.5).to(x.dtype) * 2 - 1
