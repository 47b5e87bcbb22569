"""PGD-AT — adversarial training on PGD examples (Madry, Makelov, Schmidt, Tsipras, Vladu, ICLR 2018),
and ``standard``, plain training, the no-attack baseline benchmarks compare against.

Why: the min-max view of robustness: minimise the loss at the worst point of the ε-ball,
approximated by PGD from a uniform random start. It is the baseline every other recipe is
compared with (RECIPES.md): CE on PGD-10 examples, α = 2/255, ε = 8/255, model in eval mode
while attacking, train mode for the loss.

``standard`` is the same loss with the attack switched off (``attack_steps: 0``, so x' = x):
ordinary empirical risk minimisation, kept as a recipe so a benchmark trains it with exactly
the same engine, data, schedule and seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch.nn.functional as F
from torch import Tensor, nn

from .base import Recipe, RecipeConfig


class PGDAT(Recipe):
    name = "pgd-at"
    paper = "Madry et al., Towards Deep Learning Models Resistant to Adversarial Attacks, ICLR 2018"
    improves = "robust accuracy: cross-entropy on PGD-10 adversarial examples (the baseline)"

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, x_adv: Tensor) -> Tensor:
        return F.cross_entropy(model(x_adv).float(), y, label_smoothing=self.config.label_smoothing)


@dataclass(frozen=True)
class StandardConfig(RecipeConfig):
    attack_steps: int = field(default=0, metadata={"min": 0})


class Standard(PGDAT):
    name = "standard"
    paper = "plain empirical risk minimisation (no paper; the clean-training baseline)"
    improves = "nothing: clean training with the same engine, for benchmarks"
    Config = StandardConfig
