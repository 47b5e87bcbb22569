"""The optimiser and the learning-rate schedule (warm-up, step, cosine, one-cycle)."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..recipes import RecipeConfig


def build_optimizer(model: nn.Module, config: RecipeConfig) -> torch.optim.Optimizer:
    """The recipe's optimiser (SGD or AdamW) over ``model``'s trainable parameters, at the peak lr.

    Args:
        model: the model that trains.
        config: the resolved recipe config (no ``auto`` left).
    """
    if not config.resolved:  # a bug, not a user error: the engine decides `auto` values first (harden.resolve)
        raise ValueError(
            "optimizer, lr or weight_decay is still 'auto': resolve the config for the model first (resolve_config)"
        )
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, betas=tuple(config.adam_betas), weight_decay=config.weight_decay)
    return torch.optim.SGD(
        params,
        lr=config.lr,
        momentum=config.momentum,
        nesterov=config.nesterov and config.momentum > 0,
        weight_decay=config.weight_decay,
    )


def learning_rate(config: RecipeConfig, epoch: int, step: int, steps_per_epoch: int) -> float:
    """Learning rate of a step: linear warm-up, then step / cosine / onecycle / constant.

    ``step``: lr × gamma^(milestones passed), a milestone m taking effect from epoch index
    max(1, round(m·epochs)) (0-based; the first epoch always runs at the full rate).
    ``cosine``: half cosine from lr to 0 after the warm-up. ``onecycle``: linear up to lr at
    ``warmup_epochs``, then linear down to 0 (a triangle, as in fast adversarial training).
    (``config.lr_warmup_epochs`` is ``warmup_epochs`` unless a recipe gives that name another meaning.)

    Args:
        config: the recipe config (``lr``, ``schedule`` and its settings).
        epoch: the epoch (0-based).
        step: the step within it (0-based).
        steps_per_epoch: global batches per epoch.
    """
    position = epoch + step / steps_per_epoch  # epochs done, fractional
    warmup = config.lr_warmup_epochs
    if warmup > 0 and position < warmup:
        return config.lr * position / warmup
    if config.schedule == "step":
        passed = sum(1 for m in config.milestones if epoch >= max(1, round(m * config.epochs)))
        return config.lr * config.gamma**passed
    remaining = max(config.epochs - warmup, 1e-12)
    done = min(max((position - warmup) / remaining, 0.0), 1.0)
    if config.schedule == "cosine":
        return config.lr * 0.5 * (1 + math.cos(math.pi * done))
    if config.schedule == "onecycle":
        return config.lr * (1 - done)
    return config.lr
