"""The API's training side: harden a checkpoint with a recipe, as ``hardenctl harden`` does."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from ..errors import UserError
from ..models import ImageClassifier
from ..options import HardenOptions, ModelOptions
from ..out_folder import check_out_dir
from ..recipes import Recipe, load_recipe, parse_overrides
from ..recipes.base import RecipeConfig
from ..training import HardenResult, describe_epoch, percent
from ..training import harden as train_and_write
from .evaluation import load_data, load_model

__all__ = ["describe_epoch", "harden", "percent", "recipe_for"]


def harden(
    checkpoint: str | Path | ImageClassifier,
    data: Any,
    options: HardenOptions | None = None,
    *,
    loading: ModelOptions | None = None,
    progress: Any = None,
    log: Any = None,
    **fields: Any,
) -> HardenResult | None:
    """Harden a checkpoint with a recipe and write ``options.out_dir``: model, resolved recipe, report, training log.

    Args:
        checkpoint: the model to harden, a path or a loaded model.
        data: the training data (a spec, or a Dataset).
        options: everything the run is asked (:class:`~hardenctl.options.HardenOptions`): the recipe and its
            overrides, the schedule, the before/after evaluation (``eval_data`` (default: the held-out split of
            ``data``), ``eval_n``, ``eval_options``), the output folder (new, empty, or an earlier run's with
            ``resume`` or ``overwrite``).
        loading: how to read ``checkpoint`` (:class:`~hardenctl.options.ModelOptions`).
        progress: ``(stage, done, total, metrics=None)`` during training and evaluation.
        log: one line at a time, for what is worth a note.
        **fields: HardenOptions fields, instead of (or on top of) ``options``.

    Returns None on DDP ranks other than 0.

    >>> result = hardenctl.harden("model.safetensors", "digits-train", out_dir="hardened", recipe="mart", epochs=5,
    ...                           overrides={"eps": 0.1}, eval_data="digits-test", eval_options={"suite": "quick"})
    >>> result.report.hardened.robust_accuracy
    """
    options = (
        dataclasses.replace(options, **fields) if options is not None and fields else options or HardenOptions(**fields)
    )
    chosen = recipe_for(options)
    check_out_dir(options.out_dir, options.resume, options.overwrite)  # before any model is loaded
    model = (
        checkpoint
        if isinstance(checkpoint, nn.Module)
        else load_model(checkpoint, dataclasses.replace(loading or ModelOptions(), device="cpu"))
    )
    train_set = load_data(data, model, split="train", options=options.reading)
    if getattr(chosen.config, "protected", None):  # cost-sensitive: class names → ids of this training data
        from ..protected import resolve_protected

        resolved = tuple(resolve_protected(chosen.config.protected, train_set.class_names))
        chosen.config = dataclasses.replace(chosen.config, protected=resolved)
    eval_set = (
        None
        if options.eval_data is None
        else load_data(options.eval_data, model, split="test", options=options.reading)
    )
    with torch.inference_mode(False):
        return train_and_write(model, chosen, train_set, eval_set, options, progress, log)


def recipe_for(options: HardenOptions) -> Recipe:
    """The recipe ``options`` name, with its overrides and the schedule flags on top, validated (each flag's error
    names the flag, not ``--set``).

    Args:
        options: the run's options: the recipe (name or file), its profile, overrides and schedule flags.
    """
    overrides = options.overrides
    values = dict(overrides) if isinstance(overrides, Mapping) else parse_overrides(list(overrides))
    for key, value in (("profile", options.profile), ("reinit", True if options.reinit else None)):
        if value is None:
            continue
        if key in values:
            raise UserError(f"--{key} and --set {key}=... both given", "give it once")
        values[key] = value
    for key, value in (("epochs", options.epochs), ("batch_size", options.batch_size), ("lr", options.lr)):
        if value is None:
            continue
        RecipeConfig.from_mapping({key: value}, f"--{key.replace('_', '-')}")
        if key in values and values[key] != value:
            raise UserError(f"--{key.replace('_', '-')} {value} contradicts --set {key}={values[key]}", "give it once")
        values[key] = value
    return load_recipe(options.recipe, values)
