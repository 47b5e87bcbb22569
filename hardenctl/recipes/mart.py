"""MART — Misclassification-Aware adveRsarial Training (Wang, Zou, Yi, Bailey, Ma, Gu, ICLR 2020).

Why: adversarial training treats every example alike, but the paper shows that the examples
the model *misclassifies* matter most for the final robustness. MART (i) replaces CE on the
adversarial example by a boosted CE that also pushes down the strongest wrong class, and
(ii) adds a KL term pulling the adversarial prediction toward the clean one, weighted per
sample by 1 − p_y(x): large for examples the model gets wrong, small for those it is sure of.

Faithful to the official code (github.com/YisenWang/MART, ``mart.py``):

* training attack: eval mode, x'₀ = x + 0.001·N(0, I), 10 sign steps of 0.007 on CE, projected
  onto the ε = 0.031 ball and [0, 1] (the engine's training PGD with ``attack_start: normal``);
* train mode, two forward passes (x, then x');
* L = CE(f(x'), y) − log(1.0001 − p_ŷ(x') + 1e-12)
      + β · (1/B) Σᵢ KL(p(xᵢ) ‖ p(x'ᵢ)) · (1.0000001 − p_y(xᵢ)),
  ŷ the strongest wrong class of p(x') (its top-1 if wrong, else its top-2); the KL is summed
  over classes with p(x) as the target and log(p(x') + 1e-12) as the input;
* nothing is detached: gradients flow through p(x) in the KL target *and* in the weight.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Recipe, RecipeConfig


@dataclass(frozen=True)
class MartConfig(RecipeConfig):
    beta: float = field(default=6.0, metadata={"min": 0.0})


def strongest_wrong_class(probs: Tensor, y: Tensor) -> Tensor:
    """ŷ: the top-1 class of ``probs`` if it is not ``y``, else the top-2 (never equal to ``y``)."""
    top2 = torch.argsort(probs, dim=1)[:, -2:]
    return torch.where(top2[:, -1] == y, top2[:, -2], top2[:, -1])


def misclassification_weight(logits: Tensor, y: Tensor) -> Tensor:
    """1 − p_y(x) (with the official 1.0000001 guard): near 1 for misclassified x, near 0 for confident ones."""
    return 1.0000001 - F.softmax(logits, dim=1).gather(1, y.unsqueeze(1)).squeeze(1)


def mart_per_sample(logits: Tensor, logits_adv: Tensor, y: Tensor, beta: float, label_smoothing: float = 0.0) -> Tensor:
    """MART's loss per sample: BCE(p(x'ᵢ), yᵢ) + β·KL(p(xᵢ) ‖ p(x'ᵢ))·(1 − p_y(xᵢ)); nothing detached.

    Per sample so that recipes stacking on MART (cost-sensitive) can weight it; :func:`mart_loss` is its mean.
    ``label_smoothing`` (the engine's option, 0 in the paper) smooths the CE(f(x'), y) part of the BCE only.
    """
    logits, logits_adv = logits.float(), logits_adv.float()
    adv_probs = F.softmax(logits_adv, dim=1)
    wrong = strongest_wrong_class(adv_probs, y)
    boosted = F.cross_entropy(logits_adv, y, reduction="none", label_smoothing=label_smoothing) - torch.log(
        1.0001 - adv_probs.gather(1, wrong[:, None]).squeeze(1) + 1e-12
    )
    kl = F.kl_div(torch.log(adv_probs + 1e-12), F.softmax(logits, dim=1), reduction="none").sum(dim=1)
    return boosted + float(beta) * kl * misclassification_weight(logits, y)


def mart_loss(logits: Tensor, logits_adv: Tensor, y: Tensor, beta: float, label_smoothing: float = 0.0) -> Tensor:
    """MART's loss from the clean and adversarial logits (both from train-mode passes); nothing detached."""
    return mart_per_sample(logits, logits_adv, y, beta, label_smoothing).mean()


class Mart(Recipe):
    name = "mart"
    paper = "Wang et al., Improving Adversarial Robustness Requires Revisiting Misclassified Examples, ICLR 2020"
    improves = "robust accuracy over PGD-AT/TRADES by weighting misclassified examples (boosted CE + weighted KL)"
    Config = MartConfig

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, x_adv: Tensor) -> Tensor:
        logits = model(x)
        logits_adv = model(x_adv)
        return mart_loss(logits, logits_adv, y, self.config.beta, self.config.label_smoothing)
