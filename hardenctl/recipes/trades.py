"""TRADES — TRadeoff-inspired Adversarial DEfense via Surrogate-loss minimization
(Zhang, Yu, Jiao, Xing, El Ghaoui, Jordan, ICML 2019; code github.com/yaodongyu/TRADES).

Why: robust error splits into the natural error and the error from points near the decision
boundary. TRADES minimises clean CE plus β times a smoothness term, the KL from the clean
prediction to the prediction on the worst point of the ε-ball, so β trades clean accuracy
for robustness explicitly instead of training on adversarial examples alone.

Faithful to the official ``trades.py``:

* training attack: eval mode, x'₀ = x + 0.001·N(0, I), 10 sign steps of 0.007 that maximise
  KL(p(x) ‖ p(x')) (not CE: :meth:`Trades.attack_loss`), ε = 0.031, [0, 1];
* train mode: L = CE(f(x), y) + β · (1/B) Σᵢ KL(p(xᵢ) ‖ p(x'ᵢ)), the KL summed over classes and
  not detached (gradients flow through the clean target too), β = 6 for CIFAR-10.

One difference, exact in value: the official code runs a third, identical train-mode forward
pass of x for the KL target; we reuse the first. Loss and gradients are the same; BatchNorm's
running statistics see the clean batch once per step instead of twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..attacks.losses import cross_entropy
from .base import LossFn, Recipe, RecipeConfig


@dataclass(frozen=True)
class TradesConfig(RecipeConfig):
    beta: float = field(default=6.0, metadata={"min": 0.0})


def kl_to_clean(clean_probs: Tensor, logits_adv: Tensor) -> Tensor:
    """Per-sample KL(p(x) ‖ p(x')) summed over classes."""
    return F.kl_div(F.log_softmax(logits_adv.float(), dim=1), clean_probs, reduction="none").sum(dim=1)


def trades_per_sample(
    logits: Tensor, logits_adv: Tensor, y: Tensor, beta: float, label_smoothing: float = 0.0
) -> Tensor:
    """TRADES per sample: CE(f(xᵢ), yᵢ) + β·KL(p(xᵢ) ‖ p(x'ᵢ)); :func:`trades_loss` is its mean.

    ``label_smoothing`` (the engine's option, 0 in the paper) smooths the CE term only; the KL target stays p(x).
    """
    logits = logits.float()
    ce = F.cross_entropy(logits, y, reduction="none", label_smoothing=label_smoothing)
    return ce + float(beta) * kl_to_clean(F.softmax(logits, dim=1), logits_adv)


def trades_loss(logits: Tensor, logits_adv: Tensor, y: Tensor, beta: float, label_smoothing: float = 0.0) -> Tensor:
    """CE(f(x), y) + β · mean KL(p(x) ‖ p(x')), nothing detached."""
    return trades_per_sample(logits, logits_adv, y, beta, label_smoothing).mean()


class Trades(Recipe):
    name = "trades"
    paper = "Zhang et al., Theoretically Principled Trade-off between Robustness and Accuracy, ICML 2019"
    improves = "the clean/robust trade-off: clean CE + β·KL(p(x)‖p(x')), the attack maximises the KL"
    Config = TradesConfig

    def attack_loss(self, model: nn.Module, x: Tensor, y: Tensor) -> LossFn:
        with torch.no_grad():
            clean_probs = F.softmax(model(x).float(), dim=1)
        return lambda logits_adv, _y: kl_to_clean(clean_probs, logits_adv)

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, x_adv: Tensor) -> Tensor:
        return trades_loss(model(x), model(x_adv), y, self.config.beta, self.config.label_smoothing)


def base_attack_loss(base: str, model: nn.Module, x: Tensor, y: Tensor) -> LossFn:
    """What the training attack maximises for a recipe stacked on ``base``: TRADES' KL, or cross-entropy."""
    return Trades().attack_loss(model, x, y) if base == "trades" else cross_entropy
