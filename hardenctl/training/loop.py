"""The training loop every recipe runs: epochs of seeded steps (:mod:`.epoch`), scored by the monitor
(:mod:`.monitoring`), judged by the overfitting guard (:mod:`.guard`), checkpointed so a killed run resumes exactly.

Per epoch the monitor scores the model that would ship (the EMA weights when ``ema`` is on) next to the input model's
numbers, measured once before epoch 1, so every epoch line shows what hardening has cost so far. With a one-step
training attack the catastrophic-overfitting guard reads the same monitor.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data import Dataset
from ..errors import UserError
from ..files import atomic_path
from ..models import ImageClassifier
from ..recipes import Recipe
from ..recipes.base import SWEEP
from . import guard
from .checkpoints import TrainResult, check_resume_key, checkpoint_path, read_on_main, resume_point, write_train_log
from .epoch import EpochPlan, EpochResult, TrainState, run_epoch
from .lr_sweep import sweep_lr
from .monitoring import Baseline, Monitor, Scorer, measure_input, monitor_sets
from .resolve import linear_scaling_lr, resolve_recipe
from .runtime import Distributed, HardenOptions, Log, TrainProgress, resolve_amp
from .selection import healthy_epochs, select_best
from .steps import training_attack


def epoch_record(
    epoch: int,
    done: EpochResult,
    loss_total: float,
    steps: int,
    dist: Distributed,
    batch_size: int,
    train_scores: tuple,
    holdout_scores: tuple,
    baseline: Baseline,
) -> dict[str, Any]:
    """The log line of a finished epoch (the guard's fields are added by the caller)."""
    return {
        "epoch": epoch + 1,
        "loss": loss_total / max(steps * dist.world_size, 1),
        "lr": done.lr,
        "train_clean_accuracy": train_scores[0],
        "train_robust_accuracy": train_scores[1],
        "holdout_clean_accuracy": holdout_scores[0],
        "holdout_robust_accuracy": holdout_scores[1],
        "input_holdout_clean_accuracy": baseline[0],
        "input_holdout_robust_accuracy": baseline[1],
        "train_eps": done.eps,
        "seconds": 0.0,
        "train_seconds": done.seconds,
        "images_per_second": steps * batch_size / max(done.seconds, 1e-9),
    }


def monitor_note(config: Any, scored: int) -> str:
    """What the epoch lines' held-out numbers are, so nobody reads them as the final report's."""
    return (
        f"each epoch is scored on {scored} held-out training images (set aside, never trained on): clean accuracy and "
        f"PGD-{config.monitor_steps} robust accuracy at the training ε {config.eps:.4g}. This monitor picks the saved "
        "epoch; the final report attacks the evaluation data with the full suite, so its numbers differ"
    )


def train(
    model: ImageClassifier,
    recipe: Recipe,
    train_set: Dataset,
    holdout: Dataset | None,
    options: HardenOptions,
    dist: Distributed,
    run_key: dict[str, Any],
    progress: TrainProgress | None = None,
    log: Log | None = None,
    baseline: Baseline | None = None,
    monitor: Scorer | None = None,
) -> TrainResult:
    """Train ``model`` in place with ``recipe``; checkpoints after every epoch into ``out_dir/checkpoints``.

    ``baseline``: the input model's held-out (clean, robust) accuracy, shown next to every epoch; measured here on
    ``model`` before the first step when not given (a resumed run reads it from its log). ``monitor``: what scores
    every epoch (default: the recipe's :class:`~.monitoring.Monitor`).
    """
    from torch.utils.data.distributed import DistributedSampler

    resolve_recipe(recipe, model)  # `auto` values (a no-op when the engine resolved them already)
    config = recipe.config
    device = next(model.parameters()).device
    amp_dtype = resolve_amp(options.amp, device)
    steps = len(train_set) // config.batch_size
    info = getattr(model, "info", None)
    plan = EpochPlan(
        train_set,
        config.batch_size // dist.world_size,
        steps,
        getattr(info, "data_config", None),
        getattr(info, "in_chans", None) or train_set.channels,
        device,
        torch.channels_last if options.channels_last else torch.contiguous_format,
        lambda: torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext(),
    )
    scorer = monitor if monitor is not None else Monitor.for_recipe(recipe, options.seed, dist)
    sweep = None
    if config.lr == SWEEP:  # measured before the first step (a resumed run repeats it: the same choice on CPU)
        sweep = sweep_lr(
            model,
            recipe,
            linear_scaling_lr(config, config.optimizer),
            train_set,
            holdout,
            options,
            dist,
            plan,
            scorer,
            amp_dtype,
            progress,
        )
        recipe.config = config = dataclasses.replace(config, lr=sweep.chosen)
        if log:
            log(sweep.note())
    net: nn.Module = model
    if dist.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    state = TrainState(model, recipe, amp_dtype)
    attack = training_attack(recipe, dist.rank, dist.world_size)

    history: list[dict[str, Any]] = []
    start_epoch = 0
    last = resume_point(options.out_dir, options.resume, dist)
    if (saved := read_on_main(last, dist, device)) is not None:
        check_resume_key(saved["run"], run_key, last)
        state.load(saved)
        history, start_epoch = list(saved["history"]), int(saved["epoch"])
        if log:
            log(f"resuming from {last} (epoch {start_epoch} of {config.epochs} done)")

    sampler = DistributedSampler(
        train_set,
        num_replicas=dist.world_size,
        rank=dist.rank,
        shuffle=True,  # type: ignore[arg-type]
        seed=options.seed,
        drop_last=False,
    )
    train_monitor, holdout_monitor = monitor_sets(recipe, train_set, holdout)
    if history:
        baseline = tuple(history[0].get(f"input_holdout_{k}_accuracy") for k in ("clean", "robust", "fgsm"))
    elif baseline is None:
        baseline = measure_input(model, recipe, holdout, scorer)
    if log and holdout_monitor is not None and start_epoch < config.epochs:
        log(monitor_note(config, len(holdout_monitor)))
    for epoch in range(start_epoch, config.epochs):
        decision = guard.decide(config, history, recipe.selection)
        if decision.stop:
            break
        if decision.back_to is not None:  # co_guard lower, right after a collapse: continue from the best healthy epoch
            state.load(read_on_main(checkpoint_path(options.out_dir, decision.back_to), dist, device))
            if log:
                log(
                    f"epoch {epoch + 1}: back to the weights of epoch {decision.back_to} after the collapse of epoch {epoch}"
                )
        elif config.co_guard == "lower" and history and history[-1].get("collapsed") and log:
            log(
                f"epoch {epoch + 1}: no healthy epoch to go back to after the collapse of epoch {epoch}: going on from its weights"
            )
        epoch_started = time.perf_counter()
        sampler.set_epoch(epoch)
        order = torch.tensor(list(sampler), dtype=torch.long)
        done = run_epoch(
            epoch,
            net,
            state,
            recipe,
            attack,
            order,
            plan,
            options,
            dist,
            decision.eps_scale,
            decision.lr_scale,
            progress,
        )
        (loss_total,) = dist.sum([done.loss_sum])
        if progress:  # the monitor's PGD on the training and held-out images takes a while: a log says what runs
            progress(
                f"epoch {epoch + 1}/{config.epochs}",
                steps,
                steps,
                {
                    "detail": f"scoring the epoch: clean and PGD-{config.monitor_steps} accuracy of {len(train_monitor)} "
                    f"training and {len(holdout_monitor) if holdout_monitor is not None else 0} held-out images"
                },
            )
        scored = state.scored  # what would ship
        record = epoch_record(
            epoch,
            done,
            loss_total,
            steps,
            dist,
            config.batch_size,
            scorer.score(scored, train_monitor),
            scorer.score(scored, holdout_monitor),
            baseline,
        )
        if state.ema is not None:
            record["ema"] = True
        if guard.guard_active(config):  # held-out images, or the training monitor's without a held-out split
            record["guard_fgsm_accuracy"] = scorer.fgsm(
                scored, holdout_monitor if holdout_monitor is not None else train_monitor
            )
            record["input_holdout_fgsm_accuracy"] = baseline[2] if len(baseline) > 2 else None
            record.update(guard.verdict(config, record, history, baseline))
            if record["collapsed"] and log:
                log(record["guard"])
        record["seconds"] = time.perf_counter() - epoch_started
        history.append(record)
        if progress:
            progress(f"epoch {epoch + 1}/{config.epochs}", steps, steps, record)
        if dist.is_main:
            with atomic_path(checkpoint_path(options.out_dir, epoch + 1)) as tmp:
                torch.save(state.checkpoint(epoch + 1, history, run_key), str(tmp))
            write_train_log(Path(options.out_dir) / "train_log.jsonl", history)
    if not history:
        raise UserError("nothing to train: 0 epochs", "pass --epochs 1 or more")
    selectable = [e for e in recipe.selectable_epochs()[0] if e in set(healthy_epochs(history))]
    return TrainResult(history, select_best(history, recipe.selection, selectable), history[-1]["epoch"], sweep)
