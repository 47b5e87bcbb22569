"""Auto-PGD (Croce & Hein, ICML 2020): PGD without a step size to tune.

PGD's robust accuracy depends on α and K, and a badly tuned PGD overestimates
robustness. APGD starts with a large step (2ε) and halves it per point only when
progress stalls, checked at checkpoints that get closer together as the budget is
spent; a momentum term smooths the path. ``APGDCE`` maximises cross-entropy;
``APGDT`` maximises the targeted DLR loss, which is invariant to the scale of the
logits and therefore still has a gradient when a model saturates its softmax.

Two deliberate details, both matching the reference implementation (``autopgd_base.py``):
step-size condition (a) fires when the count of loss increases is ``<= ρ·period``;
after a halving the momentum term is taken relative to the iterate before the reset.
One differs: the loss-increase count of the first period compares the first step with
the loss at the start point (as in the paper), not with zero.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor, nn

from ..errors import UserError
from .base import Attack, LossFn, keep_misclassified
from .losses import cross_entropy, dlr, dlr_targeted


def checkpoints(steps: int) -> list[int]:
    """Iteration counts at which the step size is reviewed.

    p0 = 0, p1 = 0.22, p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06), rounded down to
    whole iterations as the reference does: 22, 41, 57, 70, 80, 87, 93, 99 for 100 steps.

    Args:
        steps: the run's iteration budget (N_iter).
    """
    first, shrink, shortest = (max(int(f * steps), 1) for f in (0.22, 0.03, 0.06))
    out, at, period = [], 0, first
    while at + period <= steps:
        at += period
        out.append(at)
        period = max(period - shrink, shortest)
    return out


class _APGD(Attack):
    """Shared APGD loop; subclasses choose the loss (and, for APGD-T, the targets).

    Args:
        steps: gradient steps per run (the paper's N_iter, 100).
        restarts: runs from fresh random starts, each only on the points not yet fooled.
        rho: a point's step size is halved when at most this fraction of the steps
            since the last checkpoint increased its loss (it is oscillating), or when its
            step was not halved last time and its best loss has not improved since.
        momentum: weight α of the new step; 1 − α goes to the previous displacement.
    """

    def __init__(
        self,
        eps: float,
        norm: str = "linf",
        eot_samples: int = 1,
        steps: int = 100,
        restarts: int = 1,
        rho: float = 0.75,
        momentum: float = 0.75,
    ):
        super().__init__(eps, norm, eot_samples)
        if steps < 1:
            raise UserError(f"steps must be >= 1, got {steps}", "pass e.g. steps=100")
        self.steps = int(steps)
        self.restarts = max(1, int(restarts))
        self.rho = float(rho)
        self.momentum = float(momentum)
        self.drop_fooled = True  # False: keep fooled points in the batch to the end (the reference's way; for tests)

    def settings(self) -> dict[str, Any]:
        return {
            **super().settings(),
            "steps": self.steps,
            "restarts": self.restarts,
            "rho": self.rho,
            "momentum": self.momentum,
        }

    def _start(self, x: Tensor, rows: Tensor | None = None) -> Tensor:
        """The reference's start: a random point *on* the sphere of the norm, then boxed.

        L∞: uniform noise rescaled so its largest entry is ε (per sample); L2: a Gaussian
        direction of length ε. Starting far from ``x`` helps escape a flat clean point.
        """
        flat_shape = (-1,) + (1,) * (x.dim() - 1)
        if self.norm == "linf":
            noise = self.uniform_like(x, rows) * 2 - 1
            scale = noise.flatten(1).abs().amax(dim=1)
        else:
            noise = self.normal_like(x, rows)
            scale = noise.flatten(1).norm(dim=1)
        delta = self.eps * noise / (scale.view(flat_shape) + 1e-12)
        return self.project(x + delta, x)

    def momentum_step(
        self, x_adv: Tensor, x_prev: Tensor, grad: Tensor, step_size: float | Tensor, x: Tensor, first: bool = False
    ) -> Tensor:
        """One APGD update, as the reference's: z = P(x_k + η·step(grad)), then
        x_{k+1} = P(x_k + α·(z − x_k) + (1 − α)·(x_k − x_{k−1})), with α = 1 at the first
        step (there is no previous displacement yet). P projects onto the ε-ball ∩ [0, 1];
        step is η·sign(grad) for L∞ and η·grad/‖grad‖ for L2.
        """
        z = self.project(self.step(x_adv, grad, step_size), x)
        a = 1.0 if first else self.momentum
        return self.project(x_adv + a * (z - x_adv) + (1 - a) * (x_adv - x_prev), x)

    def _run(
        self, model: nn.Module, x: Tensor, y: Tensor, loss_for: Callable[[Tensor], LossFn], rows: Tensor | None = None
    ):
        """One APGD run. Returns (first fooling iterate, fooled mask, best-loss point, best loss).

        ``loss_for(positions)`` gives the loss for those rows of ``x``. A point leaves the
        working batch as soon as it is fooled: every per-point quantity (step size, momentum,
        checkpoint counters) depends on that point alone, so the others follow the same path
        and only the passes spent on finished points are saved. The best-loss point and loss
        are returned for the points never fooled (for fooled ones they are not used).
        """
        n = x.shape[0]
        x_adv = self._start(x, rows)  # rows: which rows of the call's batch x holds (their random streams)
        pos = torch.arange(n, device=x.device)  # row of x each working row belongs to
        loss_fn = loss_for(pos)
        loss, grad, logits = self.gradient(model, x_adv, y, loss_fn)
        x_fool = x_adv.clone()
        fooled = torch.zeros(n, dtype=torch.bool, device=x.device)
        keep_misclassified(x_fool, fooled, x_adv, self.misclassified(model, x_adv, logits, y))
        x_out, loss_out = x_adv.clone(), loss.clone()

        x_best, grad_best, loss_best = x_adv.clone(), grad.clone(), loss.clone()
        step_size = torch.full((n,), 2 * self.eps, device=x.device, dtype=x.dtype)
        x_prev, loss_prev = x_adv.clone(), loss.clone()
        increases = torch.zeros(n, device=x.device)
        # Condition (b) needs a previous checkpoint, so treat the start as "just reduced".
        reduced_last = torch.ones(n, dtype=torch.bool, device=x.device)
        best_at_last = loss_best.clone()
        marks = set(checkpoints(self.steps))
        last_mark = 0
        x_run, y_run = x, y

        for i in range(self.steps):
            if self.drop_fooled and fooled[pos].any():
                keep = ~fooled[pos]
                x_out[pos], loss_out[pos] = x_best, loss_best
                if not keep.any():
                    return x_fool, fooled, x_out, loss_out
                pos, x_run, y_run = pos[keep], x_run[keep], y_run[keep]
                x_adv, x_prev, grad, x_best, grad_best = (t[keep] for t in (x_adv, x_prev, grad, x_best, grad_best))
                loss_best, loss_prev, step_size, increases, reduced_last, best_at_last = (
                    t[keep] for t in (loss_best, loss_prev, step_size, increases, reduced_last, best_at_last)
                )
                loss_fn = loss_for(pos)
            x_prev, x_adv = x_adv, self.momentum_step(x_adv, x_prev, grad, step_size, x_run, first=i == 0)

            loss, grad, logits = self.gradient(model, x_adv, y_run, loss_fn)
            newly = self.misclassified(model, x_adv, logits, y_run) & ~fooled[pos]
            x_fool[pos[newly]] = x_adv[newly].detach()
            fooled[pos[newly]] = True
            increases += (loss > loss_prev).float()
            loss_prev = loss
            better = loss > loss_best
            x_best[better], grad_best[better] = x_adv[better], grad[better]
            loss_best = torch.where(better, loss, loss_best)

            if i + 1 in marks:
                period = i + 1 - last_mark
                last_mark = i + 1
                oscillating = increases <= self.rho * period
                stalled = ~reduced_last & (loss_best <= best_at_last)
                halve = oscillating | stalled
                reduced_last, best_at_last = halve, loss_best.clone()
                increases.zero_()
                if halve.any():
                    step_size = torch.where(halve, step_size / 2, step_size)
                    # Resume from the best point found so far, with its gradient.
                    x_adv = torch.where(halve.view(-1, *([1] * (x.dim() - 1))), x_best, x_adv)
                    grad[halve] = grad_best[halve]
        x_out[pos], loss_out[pos] = x_best, loss_best
        return x_fool, fooled, x_out, loss_out

    def _losses(self, clean_logits: Tensor, y: Tensor) -> list[Callable[[Tensor], LossFn]]:
        """One entry per pass over the data: given the indices attacked, the loss to maximise."""
        raise NotImplementedError

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """Each pass (and restart) runs only on the points still unfooled; the first success is kept.

        Points misclassified at ``x`` itself are returned unchanged, as in the reference.
        """
        clean_logits = self.predict(model, x)
        fooled = self.misclassified(model, x, clean_logits, y)
        x_out = x.clone()
        best = torch.full((x.shape[0],), float("-inf"), device=x.device)
        for make_loss in self._losses(clean_logits, y):
            for _ in range(self.restarts):
                idx = (~fooled).nonzero().squeeze(1)
                if idx.numel() == 0:
                    self.report_broken(fooled)
                    return x_out
                adv, ok, x_best, loss_best = self._run(model, x[idx], y[idx], lambda pos: make_loss(idx[pos]), idx)
                x_out[idx[ok]] = adv[ok]
                fooled[idx[ok]] = True
                # Points never fooled get the highest-loss point seen in any run.
                keep = ~ok & (loss_best > best[idx])
                x_out[idx[keep]] = x_best[keep]
                best[idx[keep]] = loss_best[keep]
        self.report_broken(fooled)
        return x_out


class APGDCE(_APGD):
    """APGD on cross-entropy (AutoAttack's first attack); ``loss="dlr"`` gives untargeted APGD-DLR."""

    name = "apgd-ce"

    def __init__(
        self,
        eps: float,
        norm: str = "linf",
        eot_samples: int = 1,
        steps: int = 100,
        restarts: int = 1,
        rho: float = 0.75,
        momentum: float = 0.75,
        loss: str = "ce",
    ):
        super().__init__(eps, norm, eot_samples, steps, restarts, rho, momentum)
        if loss not in ("ce", "dlr"):
            raise UserError(f"unknown APGD loss {loss!r}", "use loss='ce' or loss='dlr'")
        self.loss = loss

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "loss": self.loss}

    def _losses(self, clean_logits: Tensor, y: Tensor) -> list[Callable[[Tensor], LossFn]]:
        if self.loss == "dlr":
            _need_classes(clean_logits, 3, "untargeted DLR")
            return [lambda idx: dlr]
        return [lambda idx: cross_entropy]


class APGDT(_APGD):
    """APGD on the targeted DLR loss, once per target class (AutoAttack's second attack).

    Target k is the k-th most likely wrong class at the clean point. Pushing towards one
    specific class at a time finds adversarial directions that the untargeted loss,
    dominated by the runner-up class, misses.

    Args:
        n_target_classes: how many targets to try (capped at ``num_classes − 1``).
    """

    name = "apgd-t"

    def __init__(
        self,
        eps: float,
        norm: str = "linf",
        eot_samples: int = 1,
        steps: int = 100,
        restarts: int = 1,
        rho: float = 0.75,
        momentum: float = 0.75,
        n_target_classes: int = 9,
    ):
        super().__init__(eps, norm, eot_samples, steps, restarts, rho, momentum)
        if n_target_classes < 1:
            raise UserError(f"n_target_classes must be >= 1, got {n_target_classes}", "pass e.g. 9")
        self.n_target_classes = int(n_target_classes)

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "n_target_classes": self.n_target_classes}

    def _losses(self, clean_logits: Tensor, y: Tensor) -> list[Callable[[Tensor], LossFn]]:
        _need_classes(clean_logits, 4, "targeted DLR")
        wrong = clean_logits.float().scatter(1, y[:, None], float("-inf"))
        ranked = wrong.argsort(dim=1, descending=True)
        n_targets = min(self.n_target_classes, clean_logits.shape[1] - 1)

        def make(k: int) -> Callable[[Tensor], LossFn]:
            def loss_for(idx: Tensor) -> LossFn:
                target = ranked[idx, k]
                return lambda logits, labels: dlr_targeted(logits, labels, target)

            return loss_for

        return [make(k) for k in range(n_targets)]


def _need_classes(logits: Tensor, n: int, what: str) -> None:
    """DLR's denominator uses the 3rd (targeted: 4th) largest logit, so it needs that many classes."""
    if logits.shape[1] < n:
        raise UserError(
            f"{what} loss needs at least {n} classes, the model has {logits.shape[1]}",
            "use apgd-ce (CE loss) for this model",
        )
