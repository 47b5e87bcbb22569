"""``evaluate``: one model, one dataset, one config → the :class:`~hardenctl.report.Report`.

How the batches run (sharded over ``torchrun`` processes, resumed from a saved state, images kept) is the business
of the :class:`~hardenctl.evaluation.runner.EvalRunner` built here from its parts and passed to every ``run_suite``;
the report does not depend on it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import Callable

import torch
from torch import nn

from ..attacks import evaluating
from ..data import Dataset
from ..distributed import Distributed
from ..errors import UserError
from ..files import FolderLock
from ..options import EvalRun
from ..report import Report
from ..version import __version__
from .adversarial import AdversarialWriter
from .batching import auto_batch_size
from .config import EvalConfig, Progress, search_precision
from .gallery import PictureKeeper
from .resume import EvalState, model_digest
from .runner import EvalRunner
from .sharding import Shards
from .stages import Stages, run_stages
from .suite import SuiteRun, is_randomized, stage_key
from .watch import BufferWatch, snapshot_buffers


def evaluate(
    model: nn.Module,
    data: Dataset,
    config: EvalConfig | None = None,
    progress: Progress | None = None,
    *,
    run: EvalRun | None = None,
    dist: Distributed | None = None,
    log: Callable[[str], None] | None = None,
) -> Report:
    """Evaluate ``model`` ([0, 1] pixels → logits) on ``data`` and return the :class:`Report`.

    Args:
        model: the model, in any mode (attacked in eval mode, given back in the mode it came in).
        data: the data, prepared for the model; its first ``config.n`` samples are evaluated.
        config: what to measure (attacks, ε, n, seed, ..., ``sequential`` gates).
        progress: ``(stage, done, total, metrics=None)`` after every batch and attack.
        run: how it runs (:class:`~hardenctl.options.EvalRun`): ``resume_dir`` keeps the state after every batch
            (``resume`` continues a killed run from it), ``save_adversarial`` keeps every worst-case point,
            ``pictures`` is how many examples the report draws.
        dist: the torchrun process group to shard the batches over (e.g. ``Distributed.from_env()``); every process
            returns the same, complete report.
        log: hears what is worth a note (a resumed state, a sequential round's decisions).
    """
    config, run = config or EvalConfig(), run or EvalRun()
    started = time.perf_counter()
    data = _checked_data(model, data.head(config.n))
    with evaluating(model):  # the model leaves as it came, also when an attack raises
        return _evaluate(model, data, config, progress, dist, run, log, started)


def _checked_data(model: nn.Module, data: Dataset) -> Dataset:
    if len(data) == 0:
        raise UserError(
            f"no samples to evaluate in {data.source}",
            "pass data with at least one image (a gate on nothing never passes)",
        )
    num_classes = getattr(getattr(model, "info", None), "num_classes", None)
    if num_classes is not None and len(data) and int(data.y.max()) >= num_classes:
        raise UserError(
            f"the data has label {int(data.y.max())} but the model has {num_classes} classes",
            "use data whose labels are 0..num_classes-1, or the matching model",
        )
    return data


def _evaluate(
    model: nn.Module,
    data: Dataset,
    config: EvalConfig,
    progress: Progress | None,
    dist: Distributed | None,
    run: EvalRun,
    log: Callable[[str], None] | None,
    started: float,
) -> Report:
    device = next(model.parameters()).device
    watch = BufferWatch(model, snapshot_buffers(model))
    probe = data.pixels(0, min(len(data), 16)).to(device)
    torch.manual_seed(config.seed)
    detected = is_randomized(model, probe)
    randomized = bool(config.randomized) or detected or bool(getattr(getattr(model, "info", None), "randomized", False))
    draws = config.eot_samples if randomized else 1

    requested_precision = config.precision
    config = dataclasses.replace(config, precision=search_precision(config.precision, device, config.suite_name()))
    attacks = config.attacks_for(config.eps, draws)
    shards = Shards(dist or Distributed())
    main_stage = stage_key("attacks", config.eps, config.norm)
    shown_names = (
        getattr(data, "display_names", None) or data.class_names
    )  # people's names in pictures, ids for matching
    gallery = PictureKeeper(run.pictures, main_stage, shown_names, config.eps, config.norm)
    keepers = [gallery]
    if run.save_adversarial is not None:
        writer = AdversarialWriter(run.save_adversarial, main_stage, [a.name for a in attacks])
        writer.check(run.resume)
        keepers.append(writer)
    keepers.append(watch)
    with shards.joined(device), contextlib.ExitStack() as locks:
        if shards.dist.rank == 0:  # one run per state or image folder: a second one is refused, naming the first
            for folder, option in ((run.resume_dir, "--resume-dir"), (run.save_adversarial, "--save-adversarial")):
                if folder is not None:
                    locks.enter_context(FolderLock(folder, option))
        config, batch_choice = _batch_size(model, probe, data, config, device, shards, log)
        execution = {
            "search_precision": config.precision,
            "verdict_precision": "fp32",
            "precision_requested": requested_precision,
            "batch_size": config.batch_size,
            "batch_size_auto": batch_choice,
        }
        state = None
        if run.resume_dir is not None:
            key = resume_key(model, data, config, attacks, draws, device, run.save_adversarial is not None)
            state = EvalState.open(run.resume_dir, key, run.resume, shards.dist.rank, shards.dist.world_size)
            if state.resumed_batches and log is not None:
                log(f"resumed from {run.resume_dir}: {state.resumed_batches} batches were finished before")
        if run.resume_dir is not None or run.save_adversarial is not None:
            # every process looks at the directories before any writes there (a fresh run must not see a sibling's file)
            shards.barrier()
        stages = Stages(
            model,
            data,
            config,
            progress,
            EvalRunner(shards, state, keepers),
            SuiteRun(attacks, config.eps, config.norm, config.batch_size, config.seed, draws, device),
            randomized,
            log,
        )
        report = run_stages(stages, started, watch, gallery)
        report.execution = execution
    return report


def _batch_size(
    model: nn.Module,
    probe: torch.Tensor,
    data: Dataset,
    config: EvalConfig,
    device: torch.device,
    shards: Shards,
    log: Callable[[str], None] | None,
) -> tuple[EvalConfig, dict | None]:
    """``--batch-size auto`` measured and agreed over the processes (they must cut the same batches); else as given."""
    if config.batch_size != "auto":
        return config, None
    size, choice = auto_batch_size(model, probe, len(data), device, shards.dist.world_size)
    size = min(shards.gather(size))
    choice["chosen"] = size
    if log is not None:
        log(
            f"--batch-size auto: {size} ({choice['bytes_per_image'] / 2**20:.1f} MiB per image, "
            f"{choice['free_bytes'] / 2**30:.1f} GiB free)"
        )
    return dataclasses.replace(config, batch_size=size), choice


def resume_key(
    model: nn.Module,
    data: Dataset,
    config: EvalConfig,
    attacks: list,
    draws: int,
    device: torch.device,
    save_adversarial: bool,
) -> dict:
    """What a saved evaluation state must have been made with to be resumed: everything that decides a batch's
    result."""
    info = getattr(model, "info", None)
    source = config.attack_model
    key = {
        "model_sha256": getattr(info, "sha256", None) or model_digest(model),
        "data_sha256": data.sha256(),
        "n": len(data),
        "eps": config.eps,
        "norm": config.norm,
        "suite": config.suite_name(),
        "attacks": [a.name for a in attacks],
        "apgd_steps": config.apgd_steps,
        "square_queries": config.square_queries,
        "seed": config.seed,
        "batch_size": config.batch_size,
        "eot_samples": draws,
        "precision": config.precision,
        "eps_sweep": sorted(float(e) for e in config.eps_sweep) if config.eps_sweep else [],
        "large_eps_samples": config.large_eps_samples,
        "attack_model": None
        if source is None
        else (getattr(getattr(source, "info", None), "sha256", None) or model_digest(source)),
        "device": device.type,
        "torch": str(torch.__version__),
        "hardenctl": str(__version__),
        "save_adversarial": save_adversarial,
    }
    if config.sequential is not None:  # only then: a state saved before --sequential existed still resumes
        key["sequential"] = config.sequential.key()
    return key
