"""``evaluate``: one model, one dataset, one config → the :class:`~hardenctl.report.Report`.

How the batches run (sharded over ``torchrun`` processes, resumed from a saved state, images kept) is the business
of the :class:`~hardenctl.evaluation.runner.EvalRunner` built here from its parts and passed to every ``run_suite``;
the report does not depend on it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import platform
import time
from dataclasses import dataclass
from typing import Callable

import timm
import torch
from torch import nn

from ..data import ArrayDataset
from ..distributed import Distributed
from ..errors import UserError
from ..files import FolderLock
from ..options import EvalRun
from ..report import SCHEMA_VERSION, Report
from ..version import __version__
from .adversarial import AdversarialWriter
from .batching import auto_batch_size
from .checks import buffers_check, large_eps_check, suite_checks, sweep_check
from .config import EvalConfig, Progress, search_precision
from .gallery import PictureKeeper
from .results import per_class, rate, robust_count, sample_results, suite_counts
from .resume import EvalState, model_digest
from .rounds import Tracker, evaluation_order, run_rounds
from .runner import EvalRunner
from .sharding import Shards
from .suite import SuiteResult, SuiteRun, is_randomized, run_suite, stage_key
from .watch import BufferWatch, snapshot_buffers


def evaluate(
    model: nn.Module,
    data: ArrayDataset,
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
    was_training = model.training
    model.eval()
    try:  # the model leaves as it came, also when an attack raises
        return _evaluate(model, data, config, progress, dist, run, log, started)
    finally:
        model.train(was_training)


def _checked_data(model: nn.Module, data: ArrayDataset) -> ArrayDataset:
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
    data: ArrayDataset,
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
            shards.barrier()  # every process looks at the directories before any writes there (a fresh run must not see a sibling's file)
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
        report = _run_stages(stages, started, watch, gallery)
        report.execution = execution
    return report


def _batch_size(
    model: nn.Module,
    probe: torch.Tensor,
    data: ArrayDataset,
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
    data: ArrayDataset,
    config: EvalConfig,
    attacks: list,
    draws: int,
    device: torch.device,
    save_adversarial: bool,
) -> dict:
    """What a saved evaluation state must have been made with to be resumed: everything that decides a batch's result."""
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


@dataclass
class Stages:
    """What every stage of one evaluation shares: the model, the data (all n images), the config, where progress and
    notes go, the batch runner, the main suite's run and whether the model is randomised."""

    model: nn.Module
    data: ArrayDataset
    config: EvalConfig
    progress: Progress | None
    runner: EvalRunner
    suite: SuiteRun
    randomized: bool
    log: Callable[[str], None] | None = None


def _main_stage(stages: Stages) -> tuple[SuiteResult, ArrayDataset, list[int] | None, dict | None]:
    """The suite on every image, or (``--sequential``) round by round until every gate is decided. Returns the result
    and the images it covers in index order, their indices in the data (None: all) and the sequential section."""
    st, plan = stages, stages.config.sequential
    if plan is None:
        return run_suite(st.model, st.data, st.suite, st.progress, "attacks", st.runner), st.data, None, None
    tracker = Tracker(plan, st.data.y, st.config.protected, st.randomized)
    order = evaluation_order(len(st.data), st.config.seed)
    for keeper in st.runner.keepers:  # pictures and saved images are named by the images' own indices
        if hasattr(keeper, "sample_ids"):
            keeper.sample_ids = order

    def prefix(images: ArrayDataset, ids: torch.Tensor, label: str) -> SuiteResult:
        return run_suite(st.model, images, st.suite, st.progress, "attacks", st.runner, sample_ids=ids, label=label)

    round_size = st.suite.batch_size * st.runner.shards.dist.world_size  # one batch per process and round
    result, ids = run_rounds(st.data, order, round_size, tracker, prefix, st.log)
    positions = ids.argsort()
    index = ids[positions]
    return result.take(positions), st.data.take(index), index.tolist(), tracker.section(len(ids))


def _run_stages(stages: Stages, started: float, watch: BufferWatch, gallery: PictureKeeper) -> Report:
    st, config = stages, stages.config
    main, evaluated, index, sequential = _main_stage(st)
    n = len(evaluated)
    counts = suite_counts(main, st.suite.draws)
    robust_accuracy = rate(counts["robust_correct"], n)
    attack_accuracy = {name: rate(count, n) for name, count in main.after_attack.items()}
    checks = suite_checks(main, config, st.randomized, st.suite.draws, attack_accuracy)
    sweep = _sweep(st, main, robust_accuracy, n)
    if sweep:
        checks.append(sweep_check(sweep, n))
    if config.large_eps_samples > 0:
        checks.append(
            large_eps_check(
                st.model,
                st.data.head(config.large_eps_samples),
                config,
                st.suite.draws,
                st.suite.device,
                st.progress,
                st.runner,
            )
        )
    changed, left_training = watch.changes(st.runner.shards)  # over every process, and the killed runs a state resumes
    checks.append(buffers_check(changed, left_training))
    report = _report(st, main, evaluated, index, counts, checks)
    report.eps_sweep, report.sequential = sweep, sequential
    report.pictures, report.seconds = gallery.pictures(st.runner.shards), time.perf_counter() - started
    return report


def _sweep(st: Stages, main: SuiteResult, robust_accuracy: float, n: int) -> list[dict]:
    """``--eps-sweep``: robust accuracy at each ε (the main one reused, ε 0 the clean accuracy)."""
    config, sweep = st.config, []
    for eps in sorted(set(float(e) for e in config.eps_sweep or ())):
        if abs(eps - config.eps) < 1e-12:
            accuracy = robust_accuracy
        elif eps == 0:
            accuracy = rate(robust_count(main.clean_correct == 1), n)
        else:
            run = dataclasses.replace(st.suite, attacks=config.attacks_for(eps, st.suite.draws), eps=eps)
            accuracy = rate(
                robust_count(run_suite(st.model, st.data, run, st.progress, f"eps {eps:.4g}", st.runner).robust), n
            )
        sweep.append({"eps": eps, "robust_accuracy": accuracy})
    return sweep


def _extra(st: Stages, main: SuiteResult, evaluated: ArrayDataset) -> dict:
    """Sections beside the numbers: a composite model's own, the transfer note, the protected classes'."""
    config, extra = st.config, {}
    describe = getattr(st.model, "report_section", None)  # e.g. AToP's composite: its transform, and fixed or random
    if describe is not None:
        extra["purifier"] = describe()
    if config.attack_model is not None:
        source = getattr(getattr(config.attack_model, "info", None), "arch", type(config.attack_model).__name__)
        extra["transferred"] = {
            "source": source,
            "summary": "attacks computed on the classifier alone and scored on the whole model "
            "(classifier-only, BPDA): an optimistic number, not a robustness claim",
        }
    if config.protected:
        from ..protected import protected_metrics

        num_classes = getattr(getattr(st.model, "info", None), "num_classes", None)
        extra["protected"] = protected_metrics(
            evaluated.y,
            main.clean_correct,
            main.robust_prediction,
            config.protected,
            config.protected_cost,
            num_classes or len(evaluated.class_names),
            main.robust,
            st.suite.draws,
        )
        extra["protected"]["names"] = [
            evaluated.class_names[i] for i in config.protected if i < len(evaluated.class_names)
        ]
    return extra


def _report(
    st: Stages, main: SuiteResult, evaluated: ArrayDataset, index: list[int] | None, counts: dict, checks: list
) -> Report:
    """The Report of the images evaluated (all of them, or a sequential run's), described by the whole data's digest."""
    config, n, info = st.config, len(evaluated), getattr(st.model, "info", None)
    names = [a.name for a in st.suite.attacks]
    ids = getattr(evaluated, "filenames", None)
    ids = ids() if callable(ids) else ids  # FolderDataset.filenames is a method
    return Report(
        schema_version=SCHEMA_VERSION,
        clean_accuracy=rate(counts["clean_correct"], n),
        robust_accuracy=rate(counts["robust_correct"], n),
        attacks={name: rate(count, n) for name, count in main.after_attack.items()},
        per_class=per_class(
            main, evaluated.y, evaluated.class_names, st.suite.draws, getattr(evaluated, "display_names", None)
        ),
        n=n,
        eps=config.eps,
        norm=config.norm,
        suite=config.suite_name(),
        attack_list=[repr(a) for a in st.suite.attacks],
        seed=config.seed,
        randomized=st.randomized,
        eot_samples=st.suite.draws,
        model_sha256=getattr(info, "sha256", None),
        data_sha256=st.data.sha256(),  # the whole --n set, also when a sequential run stopped early
        model={
            "path": getattr(info, "path", None),
            "arch": getattr(info, "arch", None),
            "num_classes": getattr(info, "num_classes", None),
            "input_size": getattr(info, "input_size", None),
            "input_size_source": getattr(info, "input_size_source", None),
            "data_config": info.data_config.to_dict() if getattr(info, "data_config", None) is not None else None,
            "label_names": getattr(info, "label_names", None),
        },
        data={
            "source": st.data.source,
            "n": n,
            "image_size": list(st.data.image_size),
            "channels": st.data.channels,
            "notes": st.data.notes,
        },
        normalization={
            "mean": list(getattr(info, "mean", ()) or ()),
            "std": list(getattr(info, "std", ()) or ()),
            "source": getattr(info, "normalization_source", "unknown"),
        },
        versions={
            "hardenctl": __version__,
            "torch": torch.__version__,
            "timm": timm.__version__,
            "python": platform.python_version(),
        },
        device=str(st.suite.device),
        checks=checks,
        seconds=0.0,
        extra=_extra(st, main, evaluated),
        samples=sample_results(main, evaluated.y, ids, names, index),
        counts=counts,
        work={
            name: {
                "seconds": w.seconds,
                "forward_passes": w.forward,
                "backward_passes": w.backward,
                "attacked": w.attacked,
                "broken": w.broken,
            }
            for name, w in main.work.items()
        },
    )
