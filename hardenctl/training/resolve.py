"""What a profile leaves to the engine: ``auto`` values decided from the model, random re-initialisation, ε warm-up.

Why here: ``optimizer: auto`` depends on the architecture and ``lr: auto`` on the optimizer and the batch size, neither
known when the recipe file is read (``hardenctl recipes`` must answer without loading a model). The engine decides them
once, before the run key and the first step, and records every decision: ``recipe.yaml`` holds the resolved values, the
report names each rule that fired.
"""

from __future__ import annotations

import dataclasses
import re

import torch
from torch import nn

from ..errors import UserError
from ..recipes import Recipe, RecipeConfig
from ..recipes.base import AUTO, SWEEP
from .runtime import step_seed

# lr: auto = base_lr_<optimizer> × batch_size / 256 (the linear scaling rule, Goyal et al. 2017)
LR_REFERENCE_BATCH = 256


def model_arch(model: nn.Module) -> str:
    """The timm architecture name of a hardenctl model ('' when unknown).

    Args:
        model: the model (its ``info.arch``).
    """
    info = getattr(model, "info", None)
    return str(getattr(info, "arch", "") or "")


def wants_adamw(arch: str, families: tuple[str, ...] | list[str]) -> bool:
    """Whether a "_"-separated part of ``arch`` (lower case, ``hf-hub:``/``timm/`` prefixes and ``.tag`` dropped) starts
    with one of ``families``: ``vit_small_patch16_224`` → vit, ``deit3_base`` → deit, ``resnet50`` → none.

    Args:
        arch: a timm architecture name.
        families: name prefixes that train with AdamW (the recipe's ``adamw_archs``).
    """
    name = arch.lower().split(":")[-1].split("/")[-1].split(".")[0]
    return any(part.startswith(tuple(families)) for part in re.split(r"[_\-]", name) if part)


def resolve_config(config: RecipeConfig, model: nn.Module) -> tuple[RecipeConfig, list[str]]:
    """``config`` with every ``auto`` decided for ``model``, and one line per decision (empty when nothing was auto).

    Args:
        config: the recipe config as read.
        model: the model it will train (its architecture picks the optimizer).
    """
    notes: list[str] = []
    changes: dict = {}
    optimizer = config.optimizer
    if optimizer == AUTO:
        arch = model_arch(model)
        optimizer = "adamw" if wants_adamw(arch, config.adamw_archs) else "sgd"
        why = "its family is in adamw_archs" if optimizer == "adamw" else "its family is not in adamw_archs"
        notes.append(f"optimizer auto → {optimizer} ({arch or 'unknown architecture'}: {why})")
        changes["optimizer"] = optimizer
    if config.lr == AUTO:  # measured by the engine before the first step (lr_sweep.py); its choice is the next decision
        base = config.base_lr_adamw if optimizer == "adamw" else config.base_lr_sgd
        lr = linear_scaling_lr(config, optimizer)
        factors = ", ".join(f"{factor:g}" for factor in config.lr_sweep)
        notes.append(
            f"lr auto: candidates {factors} × {lr:.4g} (base_lr_{optimizer} {base:g} × batch {config.batch_size} / "
            f"{LR_REFERENCE_BATCH}, linear scaling), each fine-tuned for a few steps and scored on the held-out split"
        )
        changes["lr"] = SWEEP
    if config.weight_decay == AUTO:
        decay = config.weight_decay_adamw if optimizer == "adamw" else config.weight_decay_sgd
        notes.append(f"weight_decay auto → {decay:g} (weight_decay_{optimizer})")
        changes["weight_decay"] = decay
    return (dataclasses.replace(config, **changes) if changes else config), notes


def linear_scaling_lr(config: RecipeConfig, optimizer: str) -> float:
    """``base_lr_<optimizer> × batch_size / 256``: what ``lr: auto``'s candidates multiply, and its lr when the run
    is too short to measure.

    Args:
        config: the recipe config (``base_lr_*``, ``batch_size``).
        optimizer: ``sgd`` or ``adamw``.
    """
    base = config.base_lr_adamw if optimizer == "adamw" else config.base_lr_sgd
    return base * config.batch_size / LR_REFERENCE_BATCH


def resolve_recipe(recipe: Recipe, model: nn.Module) -> list[str]:
    """Resolve ``recipe.config`` in place for ``model`` (a no-op when already resolved); the decisions made.

    Args:
        recipe: the recipe (its config is replaced).
        model: the model it will train.
    """
    config, notes = resolve_config(recipe.config, model)
    recipe.config = config
    return notes


def reinitialise(model: nn.Module, seed: int) -> nn.Module:
    """Replace the weights of a hardenctl model (timm net inside) with timm's own random init, drawn from ``seed``.

    Builds a fresh ``timm.create_model(arch, ...)`` (no pretrained weights) with the model's class count, channels and
    input size, and loads its state into the model; the global RNG is left as it was. The normalisation wrapper, the
    data config and the label names stay.

    Args:
        model: a model loaded by hardenctl (a known timm architecture).
        seed: the run's seed.
    """
    from ..models import create_timm_model

    info = getattr(model, "info", None)
    net = getattr(model, "model", None)
    if info is None or net is None or not info.arch:
        raise UserError("--reinit needs a model loaded by hardenctl with a known timm architecture", "drop --reinit")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(step_seed(seed, 0x2E1D))
        try:
            fresh = create_timm_model(info.arch, info.num_classes, info.in_chans, info.input_size)
        except Exception as exc:  # timm raises RuntimeError for unknown names
            raise UserError(
                f"--reinit: cannot build a fresh {info.arch} with timm ({str(exc).splitlines()[0][:120]})",
                "drop --reinit",
            ) from None
    try:
        net.load_state_dict(fresh.state_dict())
    except RuntimeError as exc:
        raise UserError(
            f"--reinit: a fresh timm {info.arch} does not match the checkpoint's layers "
            f"({str(exc).splitlines()[0][:120]})",
            "drop --reinit",
        ) from None
    return model


def training_eps(config: RecipeConfig, epoch: int, step: int, steps_per_epoch: int) -> float:
    """The training attack's ε at a step: linear from 0 to ``eps`` over the first ``eps_warmup`` of all steps, then
    ``eps``.

    Step ``s`` (0-based, over the whole run) trains at eps × min(1, (s + 1) / W), W = round(eps_warmup × total steps):
    the first step already attacks (at eps / W) and step W − 1 is the first at the full ε.

    Args:
        config: the recipe config (``eps``, ``eps_warmup``, ``epochs``).
        epoch: the epoch (0-based).
        step: the step within it (0-based).
        steps_per_epoch: global batches per epoch.
    """
    total = config.epochs * steps_per_epoch
    warmup = round(config.eps_warmup * total)
    if warmup <= 0:
        return config.eps
    done = epoch * steps_per_epoch + step + 1
    return config.eps * min(1.0, done / warmup)
