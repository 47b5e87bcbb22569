"""The training loop every recipe runs: epochs of seeded steps (:mod:`.epoch`), scored by the monitor
(:mod:`.monitoring`), judged by the overfitting guard (:mod:`.guard`), checkpointed so a killed run resumes exactly.

Per epoch the monitor scores the model that would ship (the EMA weights when ``ema`` is on) next to the input model's
numbers, measured once before epoch 1, so every epoch line shows what hardening has cost so far. With a one-step
training attack the catastrophic-overfitting guard reads the same monitor.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import UserError
from ..files import atomic_path
from ..models import ImageClassifier
from ..recipes import Recipe
from ..recipes.base import SWEEP
from . import guard
from .checkpoints import TrainResult, check_resume_key, checkpoint_path, read_on_main, resume_point, write_train_log
from .data_prep import DataSplit
from .epoch import EpochResult, TrainState, run_epoch
from .lr_sweep import sweep_lr
from .monitoring import InputScores, Monitor, Monitoring, Scorer, measure_input, monitored_images
from .plan import RunContext, epoch_order
from .resolve import resolve_recipe
from .runtime import Distributed, Feedback, HardenOptions
from .selection import healthy_epochs, select_best


def train(
    model: ImageClassifier,
    recipe: Recipe,
    split: DataSplit,
    options: HardenOptions,
    dist: Distributed,
    run_key: dict[str, Any],
    feedback: Feedback | None = None,
    monitoring: Monitoring | None = None,
) -> TrainResult:
    """Train ``model`` in place with ``recipe``; checkpoints after every epoch into ``out_dir/checkpoints``.

    Args:
        model: the model to train, on its device.
        recipe: the recipe (``auto`` values are resolved here when the engine has not done it).
        split: the training images and the held-out split that scores the epochs.
        options: the run's options (``out_dir``, ``resume``, ``seed``, ``amp``, ...).
        dist: the processes (one without torchrun).
        run_key: what a checkpoint must share with a run that resumes it (:func:`~.checkpoints.run_key`).
        feedback: progress and notes.
        monitoring: the per-epoch scorer and the input model's scores beside every epoch (default: the recipe's
            monitor, the input measured on ``model`` before its first step; a resumed run reads them from its log).
    """
    feedback, monitoring = feedback or Feedback(), monitoring or Monitoring()
    resolve_recipe(recipe, model)  # `auto` values (a no-op when the engine resolved them already)
    run = RunContext.for_model(model, recipe.config, split.train, options, dist)
    scorer = monitoring.scorer if monitoring.scorer is not None else Monitor.for_recipe(recipe, options.seed, dist)
    sweep = None
    if recipe.config.lr == SWEEP:  # measured before the first step (a resumed run repeats it: the same choice on CPU)
        sweep = sweep_lr(model, recipe, split.holdout, run, scorer, feedback.progress)
        recipe.config = dataclasses.replace(recipe.config, lr=sweep.chosen)
        feedback.note(sweep.note())
    state = TrainState(model, recipe, run)
    history, start_epoch = resumed_history(state, run, run_key, feedback, recipe.config.epochs)
    monitored = monitored_images(recipe, split)
    if history:
        input_scores = tuple(history[0].get(f"input_holdout_{k}_accuracy") for k in ("clean", "robust", "fgsm"))
    elif monitoring.input_scores is None:
        input_scores = measure_input(model, recipe, split.holdout, scorer)
    else:
        input_scores = monitoring.input_scores
    if monitored.holdout is not None and start_epoch < recipe.config.epochs:
        feedback.note(monitor_note(recipe.config, len(monitored.holdout)))
    loop = EpochLoop(recipe, state, run, scorer, monitored, input_scores, run_key, feedback)
    for epoch in range(start_epoch, recipe.config.epochs):
        if not loop.train_epoch(epoch, history):
            break
    if not history:
        raise UserError("nothing to train: 0 epochs", "pass --epochs 1 or more")
    selectable = [e for e in recipe.selectable_epochs()[0] if e in set(healthy_epochs(history))]
    return TrainResult(history, select_best(history, recipe.selection, selectable), history[-1]["epoch"], sweep)


def resumed_history(
    state: TrainState, run: RunContext, run_key: dict[str, Any], feedback: Feedback, epochs: int
) -> tuple[list[dict[str, Any]], int]:
    """(the epoch records so far, epochs done): a ``--resume`` run's from its last checkpoint, whose weights, optimiser
    and EMA ``state`` takes; ``([], 0)`` for a new run.

    Args:
        state: what trains.
        run: the run (``out_dir``, ``resume``, the processes: rank 0's checkpoint on every process).
        run_key: this run's key; a checkpoint of another run is refused.
        feedback: notes the resume.
        epochs: the run's planned epochs (for the note).
    """
    last = resume_point(run.options.out_dir, run.options.resume, run.dist)
    saved = read_on_main(last, run.dist, run.plan.device)
    if saved is None:
        return [], 0
    check_resume_key(saved["run"], run_key, last)
    state.load(saved)
    history, start_epoch = list(saved["history"]), int(saved["epoch"])
    feedback.note(f"resuming from {last} (epoch {start_epoch} of {epochs} done)")
    return history, start_epoch


@dataclass(frozen=True)
class EpochLoop:
    """What every epoch of a run reads once it is set up: the recipe and the state that trains, how the run executes,
    the monitor and its images, the input model's scores, the key each checkpoint carries, where to report."""

    recipe: Recipe
    state: TrainState
    run: RunContext
    scorer: Scorer
    monitored: DataSplit  # the first monitor_n training and held-out images
    input_scores: InputScores
    run_key: dict[str, Any]
    feedback: Feedback

    def train_epoch(self, epoch: int, history: list[dict[str, Any]]) -> bool:
        """Train, score, judge and checkpoint ``epoch``, appending its record to ``history``; False when the guard
        stopped the run before it.

        Args:
            epoch: the epoch (0-based).
            history: the records of the epochs before (extended in place).
        """
        config, progress, steps = self.recipe.config, self.feedback.progress, self.run.plan.steps
        decision = guard.decide(config, history, self.recipe.selection)
        if decision.stop:
            return False
        self.go_back(epoch, decision, history)
        started = time.perf_counter()
        done = run_epoch(epoch, self.state, self.recipe, epoch_order(self.run, epoch), self.run, decision, progress)
        (loss_total,) = self.run.dist.sum([done.loss_sum])
        if progress:  # the monitor's PGD on the training and held-out images takes a while: a log says what runs
            progress(f"epoch {epoch + 1}/{config.epochs}", steps, steps, {"detail": self.scoring_detail()})
        record = self.scored_record(epoch, done, loss_total, history)
        record["seconds"] = time.perf_counter() - started
        history.append(record)
        if progress:
            progress(f"epoch {epoch + 1}/{config.epochs}", steps, steps, record)
        if self.run.dist.is_main:
            out_dir = self.run.options.out_dir
            with atomic_path(checkpoint_path(out_dir, epoch + 1)) as tmp:
                torch.save(self.state.checkpoint(epoch + 1, history, self.run_key), str(tmp))
            write_train_log(Path(out_dir) / "train_log.jsonl", history)
        return True

    def go_back(self, epoch: int, decision: guard.Decision, history: list[dict[str, Any]]) -> None:
        """``co_guard: lower`` right after a collapse: continue from the best healthy epoch's weights, or say why not.

        Args:
            epoch: the epoch about to train (0-based).
            decision: the guard's decision before it.
            history: the records so far.
        """
        back_to = decision.back_to
        if back_to is not None:
            self.state.load(
                read_on_main(checkpoint_path(self.run.options.out_dir, back_to), self.run.dist, self.run.plan.device)
            )
            self.feedback.note(
                f"epoch {epoch + 1}: back to the weights of epoch {back_to} after the collapse of epoch {epoch}"
            )
        elif self.recipe.config.co_guard == "lower" and history and history[-1].get("collapsed"):
            self.feedback.note(
                f"epoch {epoch + 1}: no healthy epoch to go back to after the collapse of epoch {epoch}: going on from "
                "its weights"
            )

    def scoring_detail(self) -> str:
        """What the monitor is about to score, for the progress line while it runs."""
        held_out = len(self.monitored.holdout) if self.monitored.holdout is not None else 0
        return (
            f"scoring the epoch: clean and PGD-{self.recipe.config.monitor_steps} accuracy of "
            f"{len(self.monitored.train)} training and {held_out} held-out images"
        )

    def scored_record(
        self, epoch: int, done: EpochResult, loss_total: float, history: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """The record of a trained epoch: the monitor's scores of the model that would ship and, when the guard
        watches, its FGSM accuracy and verdict.

        Args:
            epoch: the epoch (0-based).
            done: what its training steps returned.
            loss_total: the loss summed over its steps and processes.
            history: the records of the epochs before.
        """
        config, scorer, scored, monitored = self.recipe.config, self.scorer, self.state.scored, self.monitored
        steps, world_size = self.run.plan.steps, self.run.dist.world_size
        record = epoch_record(
            epoch,
            done,
            loss_total / max(steps * world_size, 1),
            steps * config.batch_size,
            (scorer.score(scored, monitored.train), scorer.score(scored, monitored.holdout)),
            self.input_scores,
        )
        if self.state.ema is not None:
            record["ema"] = True
        if guard.guard_active(config):  # held-out images, or the training monitor's without a held-out split
            watched = monitored.holdout if monitored.holdout is not None else monitored.train
            record["guard_fgsm_accuracy"] = scorer.fgsm(scored, watched)
            record["input_holdout_fgsm_accuracy"] = self.input_scores[2] if len(self.input_scores) > 2 else None
            record.update(guard.verdict(config, record, history, self.input_scores))
            if record["collapsed"]:
                self.feedback.note(record["guard"])
        return record


def epoch_record(
    epoch: int,
    done: EpochResult,
    loss: float,
    images: int,
    scores: tuple[tuple, tuple],
    input_scores: InputScores,
) -> dict[str, Any]:
    """The log line of a finished epoch (the guard's fields and ``seconds`` are filled in by the caller).

    Args:
        epoch: the epoch (0-based).
        done: what its training steps returned.
        loss: the mean training loss over its steps and processes.
        images: the images it trained on (steps × global batch).
        scores: the monitor's (clean, PGD robust) accuracy of the training images and of the held-out ones.
        input_scores: the input model's held-out scores, shown beside.
    """
    (train_clean, train_robust), (holdout_clean, holdout_robust) = scores
    return {
        "epoch": epoch + 1,
        "loss": loss,
        "lr": done.lr,
        "train_clean_accuracy": train_clean,
        "train_robust_accuracy": train_robust,
        "holdout_clean_accuracy": holdout_clean,
        "holdout_robust_accuracy": holdout_robust,
        "input_holdout_clean_accuracy": input_scores[0],
        "input_holdout_robust_accuracy": input_scores[1],
        "train_eps": done.eps,
        "seconds": 0.0,
        "train_seconds": done.seconds,
        "images_per_second": images / max(done.seconds, 1e-9),
    }


def monitor_note(config: Any, scored: int) -> str:
    """What the epoch lines' held-out numbers are, so nobody reads them as the final report's.

    Args:
        config: the recipe config (``monitor_steps``, ``eps``).
        scored: the held-out images the monitor scores.
    """
    return (
        f"each epoch is scored on {scored} held-out training images (set aside, never trained on): clean accuracy and "
        f"PGD-{config.monitor_steps} robust accuracy at the training ε {config.eps:.4g}. This monitor picks the saved "
        "epoch; the final report attacks the evaluation data with the full suite, so its numbers differ"
    )
