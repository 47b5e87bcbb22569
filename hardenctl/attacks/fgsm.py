"""FGSM (Goodfellow et al. 2015): one full-size step along the gradient sign."""

from __future__ import annotations

from torch import Tensor, nn

from .base import Attack
from .losses import cross_entropy


class FGSM(Attack):
    """One step of size ε on the CE loss (L∞: sign; L2: normalised gradient)."""

    name = "fgsm"

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        _, grad, _ = self.gradient(model, x, y, cross_entropy)
        return self.project(self.step(x, grad, self.eps), x)
