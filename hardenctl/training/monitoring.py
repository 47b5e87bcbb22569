"""The per-epoch monitor as one small object: clean, PGD and (for the overfitting guard) FGSM accuracy of a model.

Why an object: the training loop, the input model's baseline and the overfitting guard all read the same monitor,
with the same seed, batch size, process split and EOT draws. Passing it to :func:`~.loop.train` lets a test script
the numbers the guard sees instead of patching module globals.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from torch import nn

from ..data import Dataset
from ..recipes import Recipe, RecipeConfig
from . import guard
from .runtime import Distributed
from .steps import fgsm_accuracy, monitor

Baseline = tuple  # the input model's held-out (clean, PGD robust[, FGSM]) accuracy; FGSM only when the guard watches


class Scorer(Protocol):
    """What the loop needs of a monitor (:class:`Monitor`, or a test's scripted one)."""

    def score(self, model: nn.Module, data: Dataset | None) -> tuple[float | None, float | None]: ...

    def fgsm(self, model: nn.Module, data: Dataset | None) -> float | None: ...


@dataclass
class Monitor:
    """Scores up to ``config.monitor_n`` images in eval mode, split over the processes (:func:`.steps.monitor`)."""

    config: RecipeConfig
    seed: int
    dist: Distributed
    batch_size: int
    draws: int = 1

    @classmethod
    def for_recipe(cls, recipe: Recipe, seed: int, dist: Distributed) -> "Monitor":
        """The recipe's monitor: its EOT draws, a batch of at least 64 images per process."""
        return cls(
            recipe.config, seed, dist, max(recipe.config.batch_size // dist.world_size, 64), recipe.monitor_eot()
        )

    def score(self, model: nn.Module, data: Dataset | None) -> tuple[float | None, float | None]:
        """(clean, PGD robust) accuracy; (None, None) without data."""
        return monitor(model, data, self.config, self.seed, self.dist, self.batch_size, self.draws)

    def fgsm(self, model: nn.Module, data: Dataset | None) -> float | None:
        """Accuracy under FGSM, read by the overfitting guard."""
        return fgsm_accuracy(model, data, self.config, self.seed, self.dist, self.batch_size, self.draws)


def monitor_sets(recipe: Recipe, train_set: Dataset, holdout: Dataset | None) -> tuple[Dataset, Dataset | None]:
    """The training and held-out images the per-epoch monitor scores (the first ``monitor_n`` of each)."""
    n = recipe.config.monitor_n
    return train_set.head(n), (holdout.head(n) if holdout is not None else None)


def measure_input(model: nn.Module, recipe: Recipe, holdout: Dataset | None, scorer: Scorer) -> Baseline:
    """The input model's held-out (clean, PGD[, FGSM]) accuracy, by the same monitor as every epoch.

    FGSM only when the catastrophic-overfitting guard watches (:func:`guard.guard_active`).
    """
    if holdout is None:
        return (None, None, None) if guard.guard_active(recipe.config) else (None, None)
    data = holdout.head(recipe.config.monitor_n)
    clean, robust = scorer.score(model, data)
    if not guard.guard_active(recipe.config):
        return clean, robust
    return clean, robust, scorer.fgsm(model, data)
