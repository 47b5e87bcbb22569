"""PGD (Madry et al. 2018): projected gradient ascent from a random start, with restarts."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .base import Attack, LossFn, keep_misclassified
from .losses import cross_entropy


class PGD(Attack):
    """K steps of size α on a loss, projected onto the ε-ball ∩ [0, 1].

    Args:
        steps: iterations per restart (K).
        alpha: step size; default ε/4 (RECIPES.md), which lets K ≥ 8 steps cross the ball.
        restarts: independent random starts; a point counts as fooled if any restart fools it.
        random_start: start from a uniform point of the ball rather than from ``x``.
        loss: per-sample loss to maximise (default cross-entropy).
    """

    name = "pgd"

    def __init__(
        self,
        eps: float,
        norm: str = "linf",
        eot_samples: int = 1,
        steps: int = 20,
        alpha: float | None = None,
        restarts: int = 1,
        random_start: bool = True,
        loss: LossFn = cross_entropy,
    ):
        super().__init__(eps, norm, eot_samples)
        self.steps = int(steps)
        self.alpha = float(alpha) if alpha is not None else self.eps / 4
        self.restarts = max(1, int(restarts))
        self.use_random_start = bool(random_start)  # not `random_start`: that would shadow the method
        self.loss = loss

    def settings(self) -> dict[str, Any]:
        return {
            **super().settings(),
            "steps": self.steps,
            "alpha": self.alpha,
            "restarts": self.restarts,
            "random_start": self.use_random_start,
            "loss": self.loss,
        }

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        x_best = x.clone()
        fooled = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        for restart in range(self.restarts):
            x_adv = self.random_start(x) if self.use_random_start else x.clone()
            for _ in range(self.steps):
                _, grad, logits = self.gradient(model, x_adv, y, self.loss)
                keep_misclassified(x_best, fooled, x_adv, self.misclassified(model, x_adv, logits, y))
                x_adv = self.project(self.step(x_adv, grad, self.alpha), x)
            # Points never fooled keep this restart's final iterate (the strongest we have);
            # the caller re-scores it, so only score it here when another restart may follow.
            x_best[~fooled] = x_adv[~fooled]
            if restart + 1 < self.restarts:
                keep_misclassified(
                    x_best, fooled, x_adv, self.misclassified(model, x_adv, self.predict(model, x_adv), y)
                )
                if fooled.all():
                    break
        return x_best
