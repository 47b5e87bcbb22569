"""One epoch of seeded training steps, and the state a checkpoint holds (model, optimiser, scaler, EMA).

Every random draw of a step is seeded from (seed, epoch, step): augmentation and the attack's start are drawn for the
whole global batch and each process takes its share, so they do not depend on the number of processes; the order comes
from (seed, epoch) through ``DistributedSampler``. A resumed run needs no saved RNG state and repeats an uninterrupted
one exactly on CPU.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import UserError
from ..recipes import Recipe
from .batches import augmentation_mode, epoch_batches
from .data_prep import augment
from .guard import Decision
from .plan import RunContext, ddp_wrapped
from .resolve import training_eps
from .runtime import TrainProgress, step_seed
from .schedule import build_optimizer, learning_rate
from .steps import training_attack, training_step


def make_ema(model: nn.Module, recipe: Recipe):
    """timm's ``ModelEmaV3`` of ``model`` when the recipe's ``ema`` decay is on, else None.

    Args:
        model: the model whose weights are averaged.
        recipe: the recipe (``ema``, ``ema_warmup``).
    """
    if recipe.config.ema <= 0:
        return None
    from timm.utils import ModelEmaV3

    return ModelEmaV3(model, decay=recipe.config.ema, use_warmup=recipe.config.ema_warmup)


class TrainState:
    """What trains: the model (and its DDP wrapper under torchrun), optimiser, scaler, EMA. A checkpoint saves all but
    the wrapper; a resume (or the guard's going back) loads them."""

    def __init__(self, model: nn.Module, recipe: Recipe, run: RunContext):
        self.model = model
        self.net = ddp_wrapped(model, run)  # what the loss runs through; the attack runs on the bare model
        self.optimizer = build_optimizer(model, recipe.config)
        self.scaler = torch.amp.GradScaler("cuda", enabled=run.plan.amp_dtype == torch.float16)
        self.ema = make_ema(model, recipe)

    @property
    def scored(self) -> nn.Module:
        """The model that would ship: the EMA weights when ``ema`` is on."""
        return self.ema.module if self.ema is not None else self.model

    def load(self, state: dict[str, Any]) -> None:
        """Take the weights, optimiser, scaler and EMA of a checkpoint.

        Args:
            state: a checkpoint's contents (:meth:`checkpoint`).
        """
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            self.ema.module.load_state_dict(state["ema"])

    def checkpoint(self, epoch: int, history: list[dict[str, Any]], run_key: dict[str, Any]) -> dict[str, Any]:
        """What ``checkpoints/epoch_N.pt`` holds: enough to resume exactly, and the key that says which run it is.

        Args:
            epoch: epochs done (1-based).
            history: the epoch records so far.
            run_key: the run's key (:func:`~.checkpoints.run_key`).
        """
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
class EpochResult:
    loss_sum: float  # this process's
    lr: float  # at the epoch's last step
    eps: float  # the training attack's ε at the epoch's last step (0 without an attack)
    seconds: float  # the training steps alone


def run_epoch(
    epoch: int,
    state: TrainState,
    recipe: Recipe,
    order: torch.Tensor,
    run: RunContext,
    decision: Decision = Decision(),
    progress: TrainProgress | None = None,
) -> EpochResult:
    """Train one epoch in place: lr from the schedule, ε from the warm-up, both scaled by the overfitting guard.

    Args:
        epoch: the epoch (0-based).
        state: what trains (model, optimiser, scaler, EMA).
        recipe: the recipe (its loss, config and per-epoch hooks).
        order: this process's image positions for the epoch (:func:`~.plan.epoch_order`).
        run: the run (options, processes, the epochs' plan).
        decision: the overfitting guard's ε and lr factors for this epoch (default: none).
        progress: called after every step with the mean loss so far.
    """
    config, model, plan, seed = recipe.config, state.model, run.plan, run.options.seed
    attack = training_attack(recipe, run.dist.rank, run.dist.world_size)
    started = time.perf_counter()
    stage = f"epoch {epoch + 1}/{config.epochs}"
    mode = augmentation_mode(config, plan.data_config)
    model.train()
    loss_sum = torch.zeros((), dtype=torch.float64, device=plan.device)
    lr, eps = config.lr, config.eps * decision.eps_scale
    recipe.begin_epoch(epoch)
    for step, (x, y) in enumerate(epoch_batches(plan, order, epoch, config, seed, run.options.reading.workers)):
        lr = learning_rate(config, epoch, step, plan.steps) * recipe.lr_factor(epoch) * decision.lr_scale
        for group in state.optimizer.param_groups:
            group["lr"] = lr
        generator = torch.Generator().manual_seed(step_seed(seed, epoch, step))  # augmentation, attack start
        if mode != "timm":  # timm's per-sample augmentation already ran in the loader
            x = augment(x, config, generator, run.dist.rank, run.dist.world_size, mode)
        x = x.to(plan.device, non_blocking=True).contiguous(memory_format=plan.memory_format)
        y = y.to(plan.device, non_blocking=True)
        if attack is not None:
            attack.generator = generator
            eps = training_eps(config, epoch, step, plan.steps) * decision.eps_scale
            attack.set_eps(eps)
        torch.manual_seed(step_seed(seed, epoch, step, run.dist.rank))  # anything else random, e.g. dropout
        loss = training_step(state.net, model, recipe, attack, x, y, plan.autocast)
        if not torch.isfinite(loss):
            raise UserError(
                f"the training loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}",
                "lower the learning rate (--lr) or set grad_clip (--set grad_clip=1)",
            )
        optimizer_step(state, loss, config.grad_clip, epoch * plan.steps + step + 1)
        loss_sum += loss.detach()
        if progress:
            progress(stage, step + 1, plan.steps, {"loss": float(loss_sum) / (step + 1)})
    return EpochResult(float(loss_sum), lr, eps if attack is not None else 0.0, time.perf_counter() - started)


def optimizer_step(state: TrainState, loss: torch.Tensor, grad_clip: float, ema_step: int) -> None:
    """Backpropagate ``loss`` through the scaler, clip, step the optimiser and update the EMA.

    Args:
        state: what trains.
        loss: the batch's loss.
        grad_clip: the gradient norm limit (0: none).
        ema_step: optimiser steps done so far, this one included (the EMA's warm-up reads it).
    """
    model, optimizer, scaler = state.model, state.optimizer, state.scaler
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if grad_clip > 0:
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()
    if state.ema is not None:
        state.ema.update(model, step=ema_step)
