"""The training loop every recipe runs: epochs of seeded steps, checkpointed so a killed run resumes exactly.

Determinism: every random draw of a step is seeded from (seed, epoch, step): augmentation and the attack's start
are drawn for the whole global batch and each process takes its share, so they do not depend on the number of
processes; the shuffling comes from (seed, epoch) through ``DistributedSampler``. A resumed run needs no saved
RNG state and repeats an uninterrupted one exactly on CPU.
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
from .checkpoints import TrainResult, _check_resume_key, checkpoint_path, latest_checkpoint, read_checkpoint_state, select_best, write_train_log
from .batches import augmentation_mode, epoch_batches
from .data_prep import augment
from .runtime import Distributed, Log, RunOptions, TrainProgress, resolve_amp, step_seed
from .schedule import build_optimizer, learning_rate
from .steps import TrainingPGD, monitor, training_step


def train(model: ImageClassifier, recipe: Recipe, train_set: ImageDataset, holdout: ImageDataset | None,
          options: RunOptions, dist: Distributed, run_key: dict[str, Any],
          progress: TrainProgress | None = None, log: Log | None = None) -> TrainResult:
    """Train ``model`` in place with ``recipe``; checkpoints after every epoch into ``out_dir/checkpoints``."""
    from torch.utils.data.distributed import DistributedSampler

    config = recipe.config
    device = next(model.parameters()).device
    amp_dtype = resolve_amp(options.amp, device)
    net: nn.Module = model
    if dist.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = build_optimizer(model, config)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    attack = TrainingPGD.for_recipe(recipe, dist.rank, dist.world_size) if config.attack_steps > 0 else None
    memory_format = torch.channels_last if options.channels_last else torch.contiguous_format

    def autocast():
        return torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()

    history: list[dict[str, Any]] = []
    start_epoch = 0
    if options.resume and (last := latest_checkpoint(options.out_dir)) is not None:
        state = read_checkpoint_state(last, device)
        _check_resume_key(state["run"], run_key, last)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        history, start_epoch = list(state["history"]), int(state["epoch"])
        if log:
            log(f"resuming from {last} (epoch {start_epoch} of {config.epochs} done)")

    local_batch = config.batch_size // dist.world_size
    steps = len(train_set) // config.batch_size
    sampler = DistributedSampler(train_set, num_replicas=dist.world_size, rank=dist.rank, shuffle=True,  # type: ignore[arg-type]
                                 seed=options.seed, drop_last=False)
    train_monitor = train_set.head(config.monitor_n)
    holdout_monitor = holdout.head(config.monitor_n) if holdout is not None else None
    monitor_batch = max(local_batch, 64)
    draws = recipe.monitor_eot()
    data_config = getattr(getattr(model, "info", None), "data_config", None)
    channels = getattr(getattr(model, "info", None), "in_chans", None) or train_set.channels
    mode = augmentation_mode(config, data_config)
    for epoch in range(start_epoch, config.epochs):
        epoch_started = time.perf_counter()
        sampler.set_epoch(epoch)
        order = torch.tensor(list(sampler), dtype=torch.long)
        stage = f"epoch {epoch + 1}/{config.epochs}"
        model.train()
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        lr = config.lr
        recipe.begin_epoch(epoch)
        batches = epoch_batches(train_set, order, local_batch, steps, epoch, config, data_config, channels, options.seed,
                                options.workers)
        for step, (x, y) in enumerate(batches):
            lr = learning_rate(config, epoch, step, steps) * recipe.lr_factor(epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
            generator = torch.Generator().manual_seed(step_seed(options.seed, epoch, step))  # augmentation, attack start
            if mode != "timm":  # timm's per-sample augmentation already ran in the loader
                x = augment(x, config, generator, dist.rank, dist.world_size, mode)
            x = x.to(device, non_blocking=True).contiguous(memory_format=memory_format)
            y = y.to(device, non_blocking=True)
            if attack is not None:
                attack.generator = generator
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
            loss_sum += loss.detach()
            if progress:
                progress(stage, step + 1, steps, {"loss": float(loss_sum) / (step + 1)})
        train_seconds = time.perf_counter() - epoch_started
        (loss_total,) = dist.sum([float(loss_sum)])
        train_clean, train_robust = monitor(model, train_monitor, config, options.seed, dist, monitor_batch, draws)
        holdout_clean, holdout_robust = monitor(model, holdout_monitor, config, options.seed, dist, monitor_batch, draws)
        record = {
            "epoch": epoch + 1, "loss": loss_total / max(steps * dist.world_size, 1), "lr": lr,
            "train_clean_accuracy": train_clean, "train_robust_accuracy": train_robust,
            "holdout_clean_accuracy": holdout_clean, "holdout_robust_accuracy": holdout_robust,
            "seconds": time.perf_counter() - epoch_started, "train_seconds": train_seconds,
            "images_per_second": steps * config.batch_size / max(train_seconds, 1e-9),
        }
        history.append(record)
        if progress:
            progress(stage, steps, steps, record)
        if dist.is_main:
            state = {"format": "hardenctl-train-state", "epoch": epoch + 1, "model": model.state_dict(),
                     "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(), "history": history, "run": run_key}
            with atomic_path(checkpoint_path(options.out_dir, epoch + 1)) as tmp:
                torch.save(state, str(tmp))
            write_train_log(Path(options.out_dir) / "train_log.jsonl", history)
    if not history:
        raise UserError("nothing to train: 0 epochs", "pass --epochs 1 or more")
    return TrainResult(history, select_best(history, recipe.selection, recipe.selectable_epochs()[0]), history[-1]["epoch"])
