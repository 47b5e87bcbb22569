"""``lr: auto``: the peak learning rate chosen by measuring a few candidates on the held-out split (issue 21).

Why: one learning rate for every dataset is wrong somewhere (0.005 suited digits and under-hardened CIFAR-10). Each
candidate, a multiple (``lr_sweep``) of the linear-scaling lr, fine-tunes its own copy of the model for the same few
steps, on the same images and seeds, with the run's own schedule compressed into them (warm-up, decay, ε warm-up), and
the per-epoch monitor scores it on the held-out images. The highest held-out robust accuracy wins; candidates within
one binomial standard error of it count as tied and the tie goes to the highest clean accuracy, so noise never buys
robustness with clean accuracy. The copies are then thrown away and the run starts from the input weights with the
chosen lr. ``lr: auto`` runs it (the engine resolves ``auto`` to ``sweep``); a number skips it.

What it may cost: ``lr_sweep_budget`` of the run's work, training and scoring together (:func:`sweep_plan`). Work is
counted in image passes (a PGD step or a training step is one forward-backward of one image), so the share holds on any
device; a quarter of it goes to scoring (never fewer than 100 held-out images), the rest to the candidates' steps. A
run too short for that to measure anything uses the linear-scaling lr and says so.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..data import Dataset
from ..recipes import Recipe, RecipeConfig
from .epoch import TrainState, run_epoch
from .plan import RunContext, epoch_order
from .resolve import linear_scaling_lr

MIN_STEPS = 4  # fewer steps per candidate than this measure nothing: the run then uses the linear-scaling lr
MIN_SCORED = 100  # held-out images per candidate below which a score is noise (±5 points at 50%)
SCORING_SHARE = 0.25  # of the sweep's budget spent scoring the candidates (MIN_SCORED images at least)


@dataclass
class SweepResult:
    """What the sweep tried and chose (the report's ``lr_sweep``; one line of it in the decisions)."""

    chosen: float
    candidates: list[dict[str, Any]] = field(default_factory=list)  # lr, clean, robust, seconds
    steps: int = 0  # training steps per candidate
    scored_n: int = 0  # held-out images each candidate was scored on
    seconds: float = 0.0
    why: str = ""

    def note(self) -> str:
        """The sweep in one line, for the log and the report's decisions."""
        if not self.candidates:
            return f"lr auto → {self.chosen:.4g} (not measured: {self.why})"
        tried = ", ".join(f"{c['lr']:.4g} (clean {c['clean']:.1%}, robust {c['robust']:.1%})" for c in self.candidates)
        return (
            f"lr auto → {self.chosen:.4g}, measured: {tried}; {self.steps} steps each, scored on {self.scored_n} "
            f"held-out images; {self.why}; {self.seconds:.0f} s"
        )


def attack_passes(config: RecipeConfig) -> int:
    """Forward-backward passes of one training image per step: the attack's steps and the training step itself.

    Args:
        config: the recipe config (``attack``, ``attack_steps``).
    """
    steps = 0 if config.attack_steps == 0 else (1 if config.attack in ("fgsm", "fgsm-rs") else config.attack_steps)
    return steps + 1


def sweep_plan(
    config: RecipeConfig, steps_per_epoch: int, batch_size: int, train_n: int, holdout_n: int
) -> tuple[int, int]:
    """(training steps per candidate, held-out images scored per candidate) within ``lr_sweep_budget`` of the run's
    work.

    The run's work: every epoch's steps (``batch_size`` images × :func:`attack_passes`) and its monitoring
    (``monitor_n`` training and held-out images, clean + PGD-``monitor_steps``). Scoring gets :data:`SCORING_SHARE` of
    the budget, but never fewer than :data:`MIN_SCORED` images nor more than ``monitor_n`` or the held-out split; the
    steps get the rest.

    Args:
        config: the recipe config (epochs, budget, candidates, monitor).
        steps_per_epoch: the run's global batches per epoch.
        batch_size: the global batch.
        train_n: the training images.
        holdout_n: the held-out images.
    """
    candidates = max(len(config.lr_sweep), 1)
    per_scored = config.monitor_steps + 1
    monitored = min(config.monitor_n, train_n) + min(config.monitor_n, holdout_n)
    run = config.epochs * (steps_per_epoch * batch_size * attack_passes(config) + monitored * per_scored)
    budget = config.lr_sweep_budget * run
    scored = min(config.monitor_n, holdout_n, max(int(SCORING_SHARE * budget / (candidates * per_scored)), MIN_SCORED))
    steps = int((budget - candidates * scored * per_scored) / (candidates * batch_size * attack_passes(config)))
    return max(steps, 0), max(scored, 0)


def epochs_to_measure(config: RecipeConfig, steps_per_epoch: int, train_n: int, holdout_n: int) -> str:
    """The hint of a run too short to measure: the fewest epochs that would be long enough ('' past 1,000 epochs).

    Args:
        config: the recipe config.
        steps_per_epoch: the run's global batches per epoch.
        train_n: the training images.
        holdout_n: the held-out images.
    """
    for epochs in range(config.epochs + 1, 1001):
        longer = dataclasses.replace(config, epochs=epochs)
        if sweep_plan(longer, steps_per_epoch, config.batch_size, train_n, holdout_n)[0] >= MIN_STEPS:
            return f"; --epochs {epochs} or more would let it measure"
    return ""


def chosen_lr(candidates: list[dict[str, Any]], scored_n: int) -> tuple[float, str]:
    """The chosen lr and why: the best robust accuracy, ties (one standard error) to the best clean accuracy.

    Args:
        candidates: one row per candidate: ``lr``, held-out ``clean`` and ``robust`` accuracy.
        scored_n: the held-out images each was scored on (sets the noise).
    """
    best = max(c["robust"] for c in candidates)
    noise = math.sqrt(max(best * (1 - best), 1 / max(scored_n, 1)) / max(scored_n, 1))
    tied = [c for c in candidates if c["robust"] >= best - noise]
    pick = max(tied, key=lambda c: (c["clean"], c["robust"], -c["lr"]))
    why = (
        f"best held-out robust accuracy {best:.1%}"
        if len(tied) == 1
        else f"{len(tied)} candidates within one standard error ({noise:.1%}) of the best robust accuracy {best:.1%}: "
        "the highest clean accuracy among them"
    )
    return float(pick["lr"]), why


def sweep_lr(
    model: nn.Module, recipe: Recipe, holdout: Dataset | None, run: RunContext, scorer: Any, progress: Any = None
) -> SweepResult:
    """Try each ``lr_sweep`` multiple of the linear-scaling lr on a copy of ``model``; the choice (``model`` is
    unchanged).

    Args:
        model: the model about to train (on the run's device).
        recipe: the resolved recipe (its ``lr_sweep`` factors and budget).
        holdout: the held-out split the candidates are scored on (None: nothing to measure).
        run: the run (options, processes, the epochs' plan; candidates train on ``run.plan.train_set``).
        scorer: the per-epoch monitor (:class:`~.monitoring.Monitor`).
        progress: shows each candidate's steps.
    """
    config, plan = recipe.config, run.plan
    base_lr = linear_scaling_lr(config, config.optimizer)
    if holdout is None:
        return SweepResult(
            base_lr, why="no held-out split to score candidates on (holdout_fraction is 0); the linear-scaling lr"
        )
    steps, scored_n = sweep_plan(config, plan.steps, config.batch_size, len(plan.train_set), len(holdout))
    if steps < MIN_STEPS:
        enough = epochs_to_measure(config, plan.steps, len(plan.train_set), len(holdout))
        return SweepResult(
            base_lr,
            why=f"the run is too short to measure within lr_sweep_budget {config.lr_sweep_budget:g}: "
            f"{steps} steps per candidate (at least {MIN_STEPS} needed){enough}; the linear-scaling lr",
        )
    started = time.perf_counter()
    order = epoch_order(run, 0)[: steps * plan.local_batch]  # the first epoch's first images
    scored = holdout.head(scored_n)
    short = dataclasses.replace(run, plan=dataclasses.replace(plan, steps=steps))
    rates = sorted({base_lr * factor for factor in config.lr_sweep})
    candidates = []
    for number, lr in enumerate(rates, 1):
        stage = f"lr auto: candidate {number}/{len(rates)} (lr {lr:.4g})"
        shown = (
            None
            if progress is None
            else lambda _, done, total, metrics=None, stage=stage: progress(stage, done, total, metrics)
        )
        candidates.append(try_candidate(model, recipe, lr, order, short, scorer, scored, shown))
    chosen, why = chosen_lr(candidates, len(scored))
    return SweepResult(chosen, candidates, steps, len(scored), time.perf_counter() - started, why)


def try_candidate(
    model: nn.Module,
    recipe: Recipe,
    lr: float,
    order: torch.Tensor,
    run: RunContext,
    scorer: Any,
    scored: Dataset,
    progress: Any,
) -> dict[str, Any]:
    """One candidate's row: a copy of ``model`` fine-tuned at ``lr`` for the sweep's steps, then scored.

    Args:
        model: the model about to train (copied; left unchanged).
        recipe: the resolved recipe.
        lr: the candidate's peak lr.
        order: the images of its steps (the first epoch's first ones).
        run: the run with the sweep's steps as its plan's ``steps``.
        scorer: the per-epoch monitor.
        scored: the held-out images it is scored on.
        progress: shows its steps.
    """
    began = time.perf_counter()
    trial = copy.copy(recipe)
    trial.config = dataclasses.replace(recipe.config, lr=lr, epochs=1, ema=0.0)  # the run's schedule, compressed
    candidate = copy.deepcopy(model)
    state = TrainState(candidate, trial, run)
    run_epoch(0, state, trial, order, run, progress=progress)
    clean, robust = scorer.score(candidate, scored)
    return {"lr": lr, "clean": float(clean), "robust": float(robust), "seconds": time.perf_counter() - began}
