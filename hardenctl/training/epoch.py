"""One epoch of seeded training steps, and the state a checkpoint holds (model, optimiser, scaler, EMA).

Every random draw of a step is seeded from (seed, epoch, step): augmentation and the attack's start are drawn for the
whole global batch and each process takes its share, so they do not depend on the number of processes; the order comes
from (seed, epoch) through ``DistributedSampler``. A resumed run needs no saved RNG state and repeats an uninterrupted
one exactly on CPU.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from ..errors import UserError
from ..recipes import Recipe
from .batches import augmentation_mode, epoch_batches
from .data_prep import augment
from .resolve import training_eps
from .runtime import Distributed, HardenOptions, TrainProgress, step_seed
from .schedule import build_optimizer, learning_rate
from .steps import TrainingPGD, training_step


def make_ema(model: nn.Module, recipe: Recipe):
    """timm's ``ModelEmaV3`` of ``model`` when the recipe's ``ema`` decay is on, else None."""
    if recipe.config.ema <= 0:
        return None
    from timm.utils import ModelEmaV3

    return ModelEmaV3(model, decay=recipe.config.ema, use_warmup=recipe.config.ema_warmup)


class TrainState:
    """What a checkpoint saves and a resume (or the guard's going back) loads: model, optimiser, scaler, EMA."""

    def __init__(self, model: nn.Module, recipe: Recipe, amp_dtype: torch.dtype | None):
        self.model = model
        self.optimizer = build_optimizer(model, recipe.config)
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
        self.ema = make_ema(model, recipe)

    @property
    def scored(self) -> nn.Module:
        """The model that would ship: the EMA weights when ``ema`` is on."""
        return self.ema.module if self.ema is not None else self.model

    def load(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            self.ema.module.load_state_dict(state["ema"])

    def checkpoint(self, epoch: int, history: list[dict[str, Any]], run_key: dict[str, Any]) -> dict[str, Any]:
        state = {
            "format": "hardenctl-train-state",
            "epoch": epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "history": history,
            "run": run_key,
        }
        if self.ema is not None:
            state["ema"] = self.ema.module.state_dict()
        return state


@dataclass
class EpochPlan:
    """The fixed facts of a run's epochs: the data, its batching and augmentation, the device."""

    train_set: Any
    local_batch: int  # this process's share of a global batch
    steps: int  # global batches per epoch
    data_config: Any
    channels: int
    device: torch.device
    memory_format: torch.memory_format
    autocast: Callable[[], contextlib.AbstractContextManager]


@dataclass
class EpochResult:
    loss_sum: float  # this process's
    lr: float  # at the epoch's last step
    eps: float  # the training attack's ε at the epoch's last step (0 without an attack)
    seconds: float  # the training steps alone


def run_epoch(
    epoch: int,
    net: nn.Module,
    state: TrainState,
    recipe: Recipe,
    attack: TrainingPGD | None,
    order: torch.Tensor,
    plan: EpochPlan,
    options: HardenOptions,
    dist: Distributed,
    eps_scale: float = 1.0,
    lr_scale: float = 1.0,
    progress: TrainProgress | None = None,
) -> EpochResult:
    """Train one epoch in place: lr from the schedule, ε from the warm-up, both scaled by the overfitting guard."""
    config, model, optimizer, scaler = recipe.config, state.model, state.optimizer, state.scaler
    started = time.perf_counter()
    stage = f"epoch {epoch + 1}/{config.epochs}"
    mode = augmentation_mode(config, plan.data_config)
    model.train()
    loss_sum = torch.zeros((), dtype=torch.float64, device=plan.device)
    lr, eps = config.lr, config.eps * eps_scale
    recipe.begin_epoch(epoch)
    batches = epoch_batches(
        plan.train_set,
        order,
        plan.local_batch,
        plan.steps,
        epoch,
        config,
        plan.data_config,
        plan.channels,
        options.seed,
        options.reading.workers,
    )
    for step, (x, y) in enumerate(batches):
        lr = learning_rate(config, epoch, step, plan.steps) * recipe.lr_factor(epoch) * lr_scale
        for group in optimizer.param_groups:
            group["lr"] = lr
        generator = torch.Generator().manual_seed(step_seed(options.seed, epoch, step))  # augmentation, attack start
        if mode != "timm":  # timm's per-sample augmentation already ran in the loader
            x = augment(x, config, generator, dist.rank, dist.world_size, mode)
        x = x.to(plan.device, non_blocking=True).contiguous(memory_format=plan.memory_format)
        y = y.to(plan.device, non_blocking=True)
        if attack is not None:
            attack.generator = generator
            eps = training_eps(config, epoch, step, plan.steps) * eps_scale
            attack.set_eps(eps)
        torch.manual_seed(step_seed(options.seed, epoch, step, dist.rank))  # anything else random, e.g. dropout
        loss = training_step(net, model, recipe, attack, x, y, plan.autocast)
        if not torch.isfinite(loss):
            raise UserError(
                f"the training loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}",
                "lower the learning rate (--lr) or set grad_clip (--set grad_clip=1)",
            )
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if config.grad_clip > 0:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        if state.ema is not None:
            state.ema.update(model, step=epoch * plan.steps + step + 1)
        loss_sum += loss.detach()
        if progress:
            progress(stage, step + 1, plan.steps, {"loss": float(loss_sum) / (step + 1)})
    return EpochResult(float(loss_sum), lr, eps if attack is not None else 0.0, time.perf_counter() - started)
