"""The per-epoch monitor as one small object: clean, PGD and (for the overfitting guard) FGSM accuracy of a model.

Why an object: the training loop, the input model's scores and the overfitting guard all read the same monitor, with
the same seed, batch size, process split and EOT draws. Passing it to :func:`~.loop.train` (in :class:`Monitoring`)
lets a test script the numbers the guard sees instead of patching module globals.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from torch import nn

from ..data import Dataset
from ..recipes import Recipe, RecipeConfig
from . import guard
from .data_prep import DataSplit
from .runtime import Distributed
from .steps import clean_and_pgd_accuracy, fgsm_accuracy

InputScores = tuple  # the input model's held-out (clean, PGD robust[, FGSM]) accuracy; FGSM only when the guard watches


class Scorer(Protocol):
    """What the loop needs of a monitor (:class:`Monitor`, or a test's scripted one)."""

    def score(self, model: nn.Module, data: Dataset | None) -> tuple[float | None, float | None]:
        """(clean, PGD robust) accuracy of ``model`` on ``data``; (None, None) without data.

        Args:
            model: the model scored.
            data: the images (None: no held-out split).
        """

    def fgsm(self, model: nn.Module, data: Dataset | None) -> float | None:
        """Accuracy under FGSM of ``model`` on ``data``; None without data.

        Args:
            model: the model scored.
            data: the images (None: no held-out split).
        """


@dataclass
class Monitor:
    """Scores up to ``config.monitor_n`` images in eval mode, split over the processes
    (:func:`.steps.clean_and_pgd_accuracy`)."""

    config: RecipeConfig
    seed: int
    dist: Distributed
    batch_size: int
    draws: int = 1

    @classmethod
    def for_recipe(cls, recipe: Recipe, seed: int, dist: Distributed) -> "Monitor":
        """The recipe's monitor: its EOT draws, a batch of at least 64 images per process.

        Args:
            recipe: the resolved recipe (ε, ``monitor_steps``, batch size, EOT draws).
            seed: the run's seed.
            dist: the processes the images are split over.
        """
        return cls(
            recipe.config, seed, dist, max(recipe.config.batch_size // dist.world_size, 64), recipe.monitor_eot()
        )

    def score(self, model: nn.Module, data: Dataset | None) -> tuple[float | None, float | None]:
        """(clean, PGD robust) accuracy; (None, None) without data.

        Args:
            model: the model scored (eval mode for the scoring, its mode restored after).
            data: the images (None: no held-out split).
        """
        return clean_and_pgd_accuracy(model, data, self.config, self.seed, self.dist, self.batch_size, self.draws)

    def fgsm(self, model: nn.Module, data: Dataset | None) -> float | None:
        """Accuracy under FGSM, read by the overfitting guard.

        Args:
            model: the model scored.
            data: the images (None: no held-out split).
        """
        return fgsm_accuracy(model, data, self.config, self.seed, self.dist, self.batch_size, self.draws)


@dataclass(frozen=True)
class Monitoring:
    """What scores every epoch, and what it said of the input model before epoch 1 (each measured by the loop when
    not given: a test hands in a scripted scorer, the engine the input's scores measured before ``--reinit``)."""

    scorer: Scorer | None = None  # None: the recipe's Monitor
    input_scores: InputScores | None = None  # None: measured on the model before its first step (or read on resume)


def monitored_images(recipe: Recipe, split: DataSplit) -> DataSplit:
    """The training and held-out images the per-epoch monitor scores: the first ``monitor_n`` of each.

    Args:
        recipe: the recipe (``monitor_n``).
        split: the run's training and held-out images.
    """
    n = recipe.config.monitor_n
    return DataSplit(split.train.head(n), split.holdout.head(n) if split.holdout is not None else None)


def measure_input(model: nn.Module, recipe: Recipe, holdout: Dataset | None, scorer: Scorer) -> InputScores:
    """The input model's held-out (clean, PGD[, FGSM]) accuracy, by the same monitor as every epoch.

    FGSM only when the catastrophic-overfitting guard watches (:func:`guard.guard_active`).

    Args:
        model: the input model.
        recipe: the recipe (``monitor_n``; whether the guard watches).
        holdout: the held-out split (None: nothing to measure, all None).
        scorer: the monitor.
    """
    if holdout is None:
        return (None, None, None) if guard.guard_active(recipe.config) else (None, None)
    data = holdout.head(recipe.config.monitor_n)
    clean, robust = scorer.score(model, data)
    if not guard.guard_active(recipe.config):
        return clean, robust
    return clean, robust, scorer.fgsm(model, data)
