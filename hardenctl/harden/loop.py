"""The training loop every recipe runs: epochs of seeded steps, checkpointed so a killed run resumes exactly.

Determinism: every random draw of a step is seeded from (seed, epoch, step): augmentation and the attack's start
are drawn for the whole global batch and each process takes its share, so they do not depend on the number of
processes; the shuffling comes from (seed, epoch) through ``DistributedSampler``. A resumed run needs no saved
RNG state and repeats an uninterrupted one exactly on CPU.

Per epoch the monitor scores the model that would ship (the EMA weights when ``ema`` is on) next to the input
model's numbers, measured once before epoch 1, so every epoch line shows what hardening has cost so far. With a
one-step training attack the catastrophic-overfitting guard (:mod:`.guard`) reads the same monitor.
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data import ImageDataset
from ..errors import UserError
from ..files import atomic_path
from ..models import ImageClassifier
from ..recipes import Recipe
from . import guard
from .checkpoints import TrainResult, _check_resume_key, checkpoint_path, latest_checkpoint, read_checkpoint_state, select_best, write_train_log
from .batches import augmentation_mode, epoch_batches
from .data_prep import augment
from .resolve import resolve_recipe, training_eps
from .runtime import Distributed, Log, RunOptions, TrainProgress, resolve_amp, step_seed
from .schedule import build_optimizer, learning_rate
from .steps import fgsm_accuracy, monitor, training_attack, training_step

Baseline = tuple  # the input model's held-out (clean, PGD robust[, FGSM]) accuracy; FGSM only when the guard watches


def monitor_sets(recipe: Recipe, train_set: ImageDataset, holdout: ImageDataset | None) -> tuple[ImageDataset, ImageDataset | None]:
    """The training and held-out images the per-epoch monitor scores (the first ``monitor_n`` of each)."""
    n = recipe.config.monitor_n
    return train_set.head(n), (holdout.head(n) if holdout is not None else None)


def monitor_batch_size(recipe: Recipe, dist: Distributed) -> int:
    return max(recipe.config.batch_size // dist.world_size, 64)


def measure_input(model: nn.Module, recipe: Recipe, holdout: ImageDataset | None, options: RunOptions, dist: Distributed,
                  draws: int = 1) -> Baseline:
    """The input model's held-out (clean, PGD[, FGSM]) accuracy, by the same monitor as every epoch.

    FGSM only when the catastrophic-overfitting guard watches (:func:`guard.guard_active`); ``draws`` > 1 for a randomised model.
    """
    if holdout is None:
        return (None, None, None) if guard.guard_active(recipe.config) else (None, None)
    data, batch = holdout.head(recipe.config.monitor_n), monitor_batch_size(recipe, dist)
    clean, robust = monitor(model, data, recipe.config, options.seed, dist, batch, draws)
    if not guard.guard_active(recipe.config):
        return clean, robust
    return clean, robust, fgsm_accuracy(model, data, recipe.config, options.seed, dist, batch, draws)


def make_ema(model: nn.Module, recipe: Recipe):
    """timm's ``ModelEmaV3`` of ``model`` when the recipe's ``ema`` decay is on, else None."""
    if recipe.config.ema <= 0:
        return None
    from timm.utils import ModelEmaV3

    return ModelEmaV3(model, decay=recipe.config.ema, use_warmup=recipe.config.ema_warmup)


def train(model: ImageClassifier, recipe: Recipe, train_set: ImageDataset, holdout: ImageDataset | None,
          options: RunOptions, dist: Distributed, run_key: dict[str, Any],
          progress: TrainProgress | None = None, log: Log | None = None, baseline: Baseline | None = None) -> TrainResult:
    """Train ``model`` in place with ``recipe``; checkpoints after every epoch into ``out_dir/checkpoints``.

    ``baseline``: the input model's held-out (clean, robust) accuracy, shown next to every epoch; measured here on
    ``model`` before the first step when not given (a resumed run reads it from its log).
    """
    from torch.utils.data.distributed import DistributedSampler

    resolve_recipe(recipe, model)  # `auto` values (a no-op when the engine resolved them already)
    config = recipe.config
    device = next(model.parameters()).device
    amp_dtype = resolve_amp(options.amp, device)
    net: nn.Module = model
    if dist.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = build_optimizer(model, config)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    attack = training_attack(recipe, dist.rank, dist.world_size)
    ema = make_ema(model, recipe)
    memory_format = torch.channels_last if options.channels_last else torch.contiguous_format

    def autocast():
        return torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()

    def load_state(state: dict[str, Any]) -> None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        if ema is not None:
            ema.module.load_state_dict(state["ema"])

    history: list[dict[str, Any]] = []
    start_epoch = 0
    if options.resume and (last := latest_checkpoint(options.out_dir)) is not None:
        state = read_checkpoint_state(last, device)
        _check_resume_key(state["run"], run_key, last)
        load_state(state)
        history, start_epoch = list(state["history"]), int(state["epoch"])
        if log:
            log(f"resuming from {last} (epoch {start_epoch} of {config.epochs} done)")

    local_batch = config.batch_size // dist.world_size
    steps = len(train_set) // config.batch_size
    sampler = DistributedSampler(train_set, num_replicas=dist.world_size, rank=dist.rank, shuffle=True,  # type: ignore[arg-type]
                                 seed=options.seed, drop_last=False)
    train_monitor, holdout_monitor = monitor_sets(recipe, train_set, holdout)
    monitor_batch = monitor_batch_size(recipe, dist)
    draws = recipe.monitor_eot()
    watch = guard.guard_active(config)
    if history:
        baseline = tuple(history[0].get(f"input_holdout_{k}_accuracy") for k in ("clean", "robust", "fgsm"))
    elif baseline is None:
        baseline = measure_input(model, recipe, holdout, options, dist, draws)
    data_config = getattr(getattr(model, "info", None), "data_config", None)
    channels = getattr(getattr(model, "info", None), "in_chans", None) or train_set.channels
    mode = augmentation_mode(config, data_config)
    for epoch in range(start_epoch, config.epochs):
        if guard.stopped(config, history):
            break
        back_to = guard.restore_epoch(config, history, recipe.selection)
        if back_to is not None:  # co_guard lower, right after a collapse: continue from the best healthy epoch
            load_state(read_checkpoint_state(checkpoint_path(options.out_dir, back_to), device))
            if log:
                log(f"epoch {epoch + 1}: back to the weights of epoch {back_to} after the collapse of epoch {epoch}")
        eps_scale, lr_scale = guard.scales(config, history)
        epoch_started = time.perf_counter()
        sampler.set_epoch(epoch)
        order = torch.tensor(list(sampler), dtype=torch.long)
        stage = f"epoch {epoch + 1}/{config.epochs}"
        model.train()
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        lr, eps = config.lr, config.eps * eps_scale
        recipe.begin_epoch(epoch)
        batches = epoch_batches(train_set, order, local_batch, steps, epoch, config, data_config, channels, options.seed,
                                options.workers)
        for step, (x, y) in enumerate(batches):
            lr = learning_rate(config, epoch, step, steps) * recipe.lr_factor(epoch) * lr_scale
            for group in optimizer.param_groups:
                group["lr"] = lr
            generator = torch.Generator().manual_seed(step_seed(options.seed, epoch, step))  # augmentation, attack start
            if mode != "timm":  # timm's per-sample augmentation already ran in the loader
                x = augment(x, config, generator, dist.rank, dist.world_size, mode)
            x = x.to(device, non_blocking=True).contiguous(memory_format=memory_format)
            y = y.to(device, non_blocking=True)
            if attack is not None:
                attack.generator = generator
                eps = training_eps(config, epoch, step, steps) * eps_scale
                attack.set_eps(eps)
            torch.manual_seed(step_seed(options.seed, epoch, step, dist.rank))  # anything else random, e.g. dropout
            loss = training_step(net, model, recipe, attack, x, y, autocast)
            if not torch.isfinite(loss):
                raise UserError(f"the training loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}",
                                "lower the learning rate (--lr) or set grad_clip (--set grad_clip=1)")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if config.grad_clip > 0:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            if ema is not None:
                ema.update(model, step=epoch * steps + step + 1)
            loss_sum += loss.detach()
            if progress:
                progress(stage, step + 1, steps, {"loss": float(loss_sum) / (step + 1)})
        train_seconds = time.perf_counter() - epoch_started
        (loss_total,) = dist.sum([float(loss_sum)])
        scored = ema.module if ema is not None else model  # what would ship
        train_clean, train_robust = monitor(scored, train_monitor, config, options.seed, dist, monitor_batch, draws)
        holdout_clean, holdout_robust = monitor(scored, holdout_monitor, config, options.seed, dist, monitor_batch, draws)
        record = {
            "epoch": epoch + 1, "loss": loss_total / max(steps * dist.world_size, 1), "lr": lr,
            "train_clean_accuracy": train_clean, "train_robust_accuracy": train_robust,
            "holdout_clean_accuracy": holdout_clean, "holdout_robust_accuracy": holdout_robust,
            "input_holdout_clean_accuracy": baseline[0], "input_holdout_robust_accuracy": baseline[1],
            "train_eps": eps if attack is not None else 0.0,
            "seconds": 0.0, "train_seconds": train_seconds,
            "images_per_second": steps * config.batch_size / max(train_seconds, 1e-9),
        }
        if ema is not None:
            record["ema"] = True
        if watch:
            record["guard_fgsm_accuracy"] = fgsm_accuracy(scored, holdout_monitor if holdout_monitor is not None else train_monitor,
                                                          config, options.seed, dist, monitor_batch, draws)
            record["input_holdout_fgsm_accuracy"] = baseline[2] if len(baseline) > 2 else None
            record["collapsed"] = guard.is_collapse(config, record, history, baseline)
            if record["collapsed"]:
                record["guard"] = guard.describe_collapse(config, record, history, baseline)
                if log:
                    log(record["guard"])
        record["seconds"] = time.perf_counter() - epoch_started
        history.append(record)
        if progress:
            progress(stage, steps, steps, record)
        if dist.is_main:
            state = {"format": "hardenctl-train-state", "epoch": epoch + 1, "model": model.state_dict(),
                     "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(), "history": history, "run": run_key}
            if ema is not None:
                state["ema"] = ema.module.state_dict()
            with atomic_path(checkpoint_path(options.out_dir, epoch + 1)) as tmp:
                torch.save(state, str(tmp))
            write_train_log(Path(options.out_dir) / "train_log.jsonl", history)
    if not history:
        raise UserError("nothing to train: 0 epochs", "pass --epochs 1 or more")
    selectable = [e for e in recipe.selectable_epochs()[0] if e in set(guard.healthy_epochs(history))]
    return TrainResult(history, select_best(history, recipe.selection, selectable), history[-1]["epoch"])
