"""The whole job: check everything a user can get wrong, train, export, evaluate input and result, write --out."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from pathlib import Path
from typing import Any

import torch

from ..data import Dataset
from ..errors import UserError
from ..evaluation import EvalConfig
from ..files import FolderLock
from ..models import ImageClassifier, resolve_device
from ..out_folder import check_out_dir, clear_previous_run
from ..recipes import Recipe, RecipeConfig
from .checkpoints import TrainResult, resume_point, run_key
from .data_prep import DataSplit, check_data, split_holdout
from .final_evaluation import FinalEvaluation
from .guard import guard_active
from .loop import train
from .monitoring import InputScores, Monitor, Monitoring, measure_input
from .outputs import HardenResult, RunFacts, evaluate_and_write
from .resolve import reinitialise, resolve_recipe
from .runtime import Distributed, Feedback, HardenOptions, Log, TrainProgress, amp_label, resolve_amp


def harden(
    model: ImageClassifier,
    recipe: Recipe,
    train_data: Dataset,
    eval_data: Dataset | None,
    options: HardenOptions,
    progress: TrainProgress | None = None,
    log: Log | None = None,
) -> HardenResult | None:
    """Train ``model`` with ``recipe``, then evaluate input and result and write ``options.out_dir``.

    Everything a user can get wrong is checked before the first file is written. Returns None
    on DDP ranks other than 0, which write nothing.

    Args:
        model: the input model (it trains in place; a copy is kept for the report's input column).
        recipe: the recipe; its ``auto`` values are decided here for ``model``.
        train_data: the training data; ``holdout_fraction`` of it is held out to pick the epoch.
        eval_data: the before/after report's data (None: the held-out split).
        options: the run's options (:class:`~hardenctl.options.HardenOptions`).
        progress: ``(stage, done, total, metrics=None)`` during training and evaluation.
        log: one note at a time.
    """
    decisions = resolve_recipe(recipe, model)  # `auto` optimizer/lr/weight decay, decided for this model
    dist = Distributed.from_env()
    split = checked_split(recipe.config, train_data, eval_data, options.seed, dist)
    evaluation = final_evaluation(recipe.config, eval_data, split.holdout, options)
    check_out_dir(Path(options.out_dir), options.resume, options.overwrite)
    feedback = Feedback(progress, log)
    # one writer per folder: rank 0 writes --out and holds its lock until the run is written (or refused)
    with FolderLock(options.out_dir, "--out") if dist.is_main else contextlib.nullcontext():
        if options.overwrite and dist.is_main:
            clear_previous_run(Path(options.out_dir))
        device = training_device(options, dist)
        input_model = copy.deepcopy(model).cpu().eval() if dist.is_main else None
        identity = getattr(train_data, "fingerprint", train_data.sha256)()  # streamed folders: files, not every pixel
        key = run_key(recipe, options.seed, getattr(model.info, "sha256", None), identity)
        trained, names_note = prepared_model(model, recipe, train_data, options, device)
        if names_note:
            feedback.note(names_note)
        dist.start(device)
        try:
            input_scores = None
            if resume_point(options.out_dir, options.resume, dist) is None:  # a resumed run reads it from its log
                input_scores = _input_scores(input_model, recipe, split.holdout, options, dist, device)
            result = train(trained, recipe, split, options, dist, key, feedback, Monitoring(input_scores=input_scores))
        finally:
            dist.close()
        if not dist.is_main:
            return None
        facts = RunFacts(
            result=result,
            data=data_facts(train_data, split),
            runtime=runtime_facts(options, dist, device, result),
            no_holdout=split.holdout is None,
            decisions=list(decisions) + ([result.lr_sweep.note()] if result.lr_sweep is not None else []),
            notes=[names_note] if names_note else [],
        )
        return evaluate_and_write(input_model, trained, recipe, facts, evaluation, options, feedback)


def checked_split(
    config: RecipeConfig, train_data: Dataset, eval_data: Dataset | None, seed: int, dist: Distributed
) -> DataSplit:
    """The training and held-out images, once the data is known to train, pick an epoch and be reported on.

    Args:
        config: the resolved recipe config (``batch_size``, ``holdout_fraction``).
        train_data: the training data as given.
        eval_data: the report's data (None: the held-out split).
        seed: the run's seed (draws the split).
        dist: the processes the global batch is split over.
    """
    if config.batch_size % dist.world_size:
        raise UserError(
            f"batch_size {config.batch_size} does not split over {dist.world_size} processes",
            f"pass a --batch-size divisible by {dist.world_size}",
        )
    check_data(train_data, eval_data, config.holdout_fraction)
    split = split_holdout(train_data, config.holdout_fraction, seed)
    if len(split.train) < config.batch_size:
        raise UserError(
            f"batch_size {config.batch_size} is larger than the {len(split.train)} training images",
            f"pass --batch-size {max(1, len(split.train) // 2)} or more data",
        )
    if eval_data is None and split.holdout is None:
        raise UserError(
            "no evaluation data: holdout_fraction is 0 and --eval-data is not given",
            "pass --eval-data or --set holdout_fraction=0.1",
        )
    return split


def final_evaluation(
    config: RecipeConfig, eval_data: Dataset | None, holdout: Dataset | None, options: HardenOptions
) -> FinalEvaluation:
    """The before/after evaluation, checked: bad suite or attack names fail here, before any training.

    Args:
        config: the recipe config (a cost-sensitive recipe's protected classes are reported before and after).
        eval_data: ``--eval-data`` (None: the held-out split).
        holdout: the held-out split.
        options: the run's options (``eval_n``, ``seed``, ``eval_options``).
    """
    eval_config = EvalConfig(n=options.eval_n, seed=options.seed, **options.eval_options)
    if getattr(config, "protected", None):
        eval_config.protected, eval_config.protected_cost = list(config.protected), float(config.cost)
    eval_config.build_attacks(eval_config.eps, 1)
    return FinalEvaluation(eval_data if eval_data is not None else holdout, eval_config, eval_data is None)


def training_device(options: HardenOptions, dist: Distributed) -> torch.device:
    """``--device``, one GPU per process under torchrun; ``--amp`` is checked against it.

    Args:
        options: the run's options (``device``, ``amp``).
        dist: the processes (each takes the GPU of its local rank).
    """
    device = resolve_device(options.device)
    if dist.world_size > 1 and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
    resolve_amp(options.amp, device)
    return device


def prepared_model(
    model: ImageClassifier, recipe: Recipe, train_data: Dataset, options: HardenOptions, device: torch.device
) -> tuple[ImageClassifier, str | None]:
    """The model that trains (``--reinit``, the recipe's modules, on ``device``) and a note when the data's class
    names cannot travel to it.

    Args:
        model: the input model (its weights are replaced under ``--reinit``).
        recipe: the recipe (``reinit``; ``prepare`` adds its modules, drawn from the seed).
        train_data: the training data (its class names).
        options: the run's options (``seed``, ``channels_last``).
        device: where it trains.
    """
    if recipe.config.reinit:  # the paper's from-scratch start (the report keeps the input model's column)
        reinitialise(model, options.seed)  # timm's init, drawn from --seed
    memory_format = torch.channels_last if options.channels_last else torch.contiguous_format
    trained = recipe.prepare(model, seed=options.seed).to(device).to(memory_format=memory_format)  # new modules: seed
    names, names_note = travelling_names(trained.info, train_data)
    if names is not None:
        trained.info = dataclasses.replace(trained.info, label_names=names)
    return trained, names_note


def data_facts(train_data: Dataset, split: DataSplit) -> dict[str, Any]:
    """The report's ``data``: where the training images came from and how many trained and were held out.

    Args:
        train_data: the training data as given.
        split: its training and held-out parts.
    """
    return {
        "train": train_data.source,
        "train_n": len(split.train),
        "holdout_n": len(split.holdout) if split.holdout is not None else 0,
    }


def runtime_facts(options: HardenOptions, dist: Distributed, device: torch.device, result: TrainResult) -> dict:
    """The report's ``runtime``: where and how the run trained, and how long its steps took.

    Args:
        options: the run's options (``amp``, ``channels_last``).
        dist: the processes.
        device: this process's device.
        result: the training's outcome (the epochs' step seconds, the lr sweep's).
    """
    return {
        "device": str(device),
        "world_size": dist.world_size,
        "amp": amp_label(resolve_amp(options.amp, device)),
        "channels_last": options.channels_last,
        "train_seconds": sum(h["train_seconds"] for h in result.history),
        "lr_sweep_seconds": result.lr_sweep.seconds if result.lr_sweep is not None else 0.0,
    }


def travelling_names(info: Any, train_data: Dataset) -> tuple[list[str] | None, str | None]:
    """The class names the hardened model gets from the training data (None: keep the input's), and a note when the
    data's names cannot travel.

    A model folder must name every output or none (``hardenctl eval`` refuses a partial list), so data that names
    fewer classes than the model has outputs leaves the model as it was, without names, and the report says why.
    A model that has names keeps them (:func:`hardenctl.api.prepare_data` refused data whose names conflict).

    Args:
        info: the prepared model's info (None: not a hardenctl model, nothing to name).
        train_data: the training data (its class names, when it knows them).
    """
    if info is None or info.label_names is not None or not getattr(train_data, "names_known", False):
        return None, None
    names = list(train_data.class_names)
    if len(names) >= info.num_classes:
        return names[: info.num_classes], None
    return None, (
        f"the training data names {len(names)} classes but the model has {info.num_classes} outputs: the hardened "
        "model carries no class names, like the input (a model names all its outputs or none)"
    )


def _input_scores(
    input_model: ImageClassifier | None,
    recipe: Recipe,
    holdout: Dataset | None,
    options: HardenOptions,
    dist: Distributed,
    device: torch.device,
) -> InputScores:
    """The input model's held-out clean, PGD (and, for the overfitting guard, FGSM) accuracy by the per-epoch monitor,
    measured once before epoch 1.

    Rank 0 holds the input model (as it was before ``--reinit`` and ``recipe.prepare``): it scores the whole held-out
    monitor set alone and the sum over processes hands every rank the same numbers.
    """
    alone = Monitor(recipe.config, options.seed, Distributed(), max(recipe.config.batch_size, 64))  # one draw
    if holdout is None:
        return measure_input(input_model, recipe, None, alone)
    local: tuple = ()
    if dist.is_main and input_model is not None:
        local = measure_input(input_model.to(device), recipe, holdout, alone)
        input_model.cpu()
    count = 3 if guard_active(recipe.config) else 2
    return tuple(dist.sum([float(v) for v in local] if local else [0.0] * count))
