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
from ..recipes import Recipe
from .checkpoints import resume_point, run_key
from .data_prep import check_data, split_holdout
from .guard import guard_active
from .loop import train
from .monitoring import Monitor, measure_input
from .outputs import HardenResult, RunFacts, evaluate_and_write
from .resolve import reinitialise, resolve_recipe
from .runtime import Distributed, HardenOptions, Log, TrainProgress, amp_label, resolve_amp


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
    """
    decisions = resolve_recipe(recipe, model)  # `auto` optimizer/lr/weight decay, decided for this model
    config = recipe.config
    dist = Distributed.from_env()
    if config.batch_size % dist.world_size:
        raise UserError(
            f"batch_size {config.batch_size} does not split over {dist.world_size} processes",
            f"pass a --batch-size divisible by {dist.world_size}",
        )
    check_data(train_data, eval_data, config.holdout_fraction)
    train_set, holdout = split_holdout(train_data, config.holdout_fraction, options.seed)
    if len(train_set) < config.batch_size:
        raise UserError(
            f"batch_size {config.batch_size} is larger than the {len(train_set)} training images",
            f"pass --batch-size {max(1, len(train_set) // 2)} or more data",
        )
    if eval_data is None and holdout is None:
        raise UserError(
            "no evaluation data: holdout_fraction is 0 and --eval-data is not given",
            "pass --eval-data or --set holdout_fraction=0.1",
        )
    eval_config = EvalConfig(n=options.eval_n, seed=options.seed, **options.eval_options)
    if getattr(config, "protected", None):  # a cost-sensitive recipe: report its protected classes before and after
        eval_config.protected, eval_config.protected_cost = list(config.protected), float(config.cost)
    eval_config.build_attacks(eval_config.eps, 1)  # bad suite/attack names fail before any training
    check_out_dir(Path(options.out_dir), options.resume, options.overwrite)
    # one writer per folder: rank 0 writes --out and holds its lock until the run is written (or refused)
    with FolderLock(options.out_dir, "--out") if dist.is_main else contextlib.nullcontext():
        if options.overwrite and dist.is_main:
            clear_previous_run(Path(options.out_dir))
        return _run(
            model,
            recipe,
            train_data,
            eval_data,
            options,
            progress,
            log,
            decisions,
            dist,
            eval_config,
            (train_set, holdout),
        )


def _run(
    model: ImageClassifier,
    recipe: Recipe,
    train_data: Dataset,
    eval_data: Dataset | None,
    options: HardenOptions,
    progress: TrainProgress | None,
    log: Log | None,
    decisions: list[str],
    dist: Distributed,
    eval_config: EvalConfig,
    split: tuple[Dataset, Dataset | None],
) -> HardenResult | None:
    """Train and write, once every check passed and the folder is this run's."""
    config = recipe.config
    train_set, holdout = split
    device = resolve_device(options.device)
    if dist.world_size > 1 and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
    resolve_amp(options.amp, device)

    input_model = copy.deepcopy(model).cpu().eval() if dist.is_main else None
    identity = getattr(train_data, "fingerprint", train_data.sha256)()  # streamed folders: files, not every pixel
    key = run_key(recipe, options.seed, getattr(model.info, "sha256", None), identity)
    memory_format = torch.channels_last if options.channels_last else torch.contiguous_format
    if (
        config.reinit
    ):  # --reinit: the paper's from-scratch start, timm's init drawn from --seed (the report keeps the input's column)
        reinitialise(model, options.seed)
    trained = (
        recipe.prepare(model, seed=options.seed).to(device).to(memory_format=memory_format)
    )  # new modules drawn from --seed
    names, names_note = travelling_names(trained.info, train_data)
    if names is not None:
        trained.info = dataclasses.replace(trained.info, label_names=names)
    if names_note and log:
        log(names_note)
    dist.start(device)
    try:
        baseline = None
        if (
            resume_point(options.out_dir, options.resume, dist) is None
        ):  # a resumed run reads it from its log (rank 0's)
            baseline = _input_baseline(input_model, recipe, holdout, options, dist, device)
        result = train(trained, recipe, train_set, holdout, options, dist, key, progress, log, baseline=baseline)
    finally:
        dist.close()
    if not dist.is_main:
        return None
    runtime = {
        "device": str(device),
        "world_size": dist.world_size,
        "amp": amp_label(resolve_amp(options.amp, device)),
        "channels_last": options.channels_last,
        "train_seconds": sum(h["train_seconds"] for h in result.history),
        "lr_sweep_seconds": result.lr_sweep.seconds if result.lr_sweep is not None else 0.0,
    }
    data = {
        "train": train_data.source,
        "train_n": len(train_set),
        "holdout_n": len(holdout) if holdout is not None else 0,
    }
    facts = RunFacts(
        result=result,
        data=data,
        runtime=runtime,
        no_holdout=holdout is None,
        eval_is_holdout=eval_data is None,
        decisions=list(decisions) + ([result.lr_sweep.note()] if result.lr_sweep is not None else []),
        notes=[names_note] if names_note else [],
    )
    return evaluate_and_write(
        input_model,
        trained,
        recipe,
        facts,
        eval_data if eval_data is not None else holdout,
        eval_config,
        options,
        progress,
        log,
    )


def travelling_names(info: Any, train_data: Dataset) -> tuple[list[str] | None, str | None]:
    """The class names the hardened model gets from the training data (None: keep the input's), and a note when the
    data's names cannot travel.

    A model folder must name every output or none (``hardenctl eval`` refuses a partial list), so data that names
    fewer classes than the model has outputs leaves the model as it was, without names, and the report says why.
    A model that has names keeps them (:func:`hardenctl.api.prepare_data` refused data whose names conflict).
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


def _input_baseline(
    input_model: ImageClassifier | None,
    recipe: Recipe,
    holdout: Dataset | None,
    options: HardenOptions,
    dist: Distributed,
    device: torch.device,
) -> tuple:
    """The input model's held-out clean, PGD (and, for the overfitting guard, FGSM) accuracy by the per-epoch monitor,
    measured once before epoch 1.

    Rank 0 holds the input model (as it was before ``--reinit`` and ``recipe.prepare``): it scores the whole held-out
    monitor set alone and the sum over processes hands every rank the same numbers.
    """
    alone = Monitor(
        recipe.config, options.seed, Distributed(), max(recipe.config.batch_size, 64)
    )  # one draw: the input
    if holdout is None:
        return measure_input(input_model, recipe, None, alone)
    local: tuple = ()
    if dist.is_main and input_model is not None:
        local = measure_input(input_model.to(device), recipe, holdout, alone)
        input_model.cpu()
    count = 3 if guard_active(recipe.config) else 2
    return tuple(dist.sum([float(v) for v in local] if local else [0.0] * count))
