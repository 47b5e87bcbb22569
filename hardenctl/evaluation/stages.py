"""The stages of one evaluation after its setup: the main suite (or its sequential rounds), the ε sweep, the sanity
checks, and the :class:`~hardenctl.report.Report` they make. :func:`hardenctl.evaluation.engine.evaluate` sets up
what they share (:class:`Stages`)."""

from __future__ import annotations

import dataclasses
import platform
import time
from dataclasses import dataclass
from typing import Callable

import timm
import torch
from torch import nn

from ..data import Dataset
from ..report import SCHEMA_VERSION, Report
from ..version import __version__
from .checks import buffers_check, large_eps_check, suite_checks, sweep_check
from .config import EvalConfig, Progress
from .gallery import PictureKeeper
from .results import per_class, rate, robust_count, sample_results, suite_counts
from .rounds import Tracker, evaluation_order, run_rounds
from .runner import EvalRunner
from .suite import SuiteResult, SuiteRun, run_suite
from .watch import BufferWatch


@dataclass
class Stages:
    """What every stage of one evaluation shares: the model, the data (all n images), the config, where progress and
    notes go, the batch runner, the main suite's run and whether the model is randomised."""

    model: nn.Module
    data: Dataset
    config: EvalConfig
    progress: Progress | None
    runner: EvalRunner
    suite: SuiteRun
    randomized: bool
    log: Callable[[str], None] | None = None


def _main_stage(stages: Stages) -> tuple[SuiteResult, Dataset, list[int] | None, dict | None]:
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

    def prefix(images: Dataset, ids: torch.Tensor, label: str) -> SuiteResult:
        return run_suite(st.model, images, st.suite, st.progress, "attacks", st.runner, sample_ids=ids, label=label)

    round_size = st.suite.batch_size * st.runner.shards.dist.world_size  # one batch per process and round
    result, ids = run_rounds(st.data, order, round_size, tracker, prefix, st.log)
    positions = ids.argsort()
    index = ids[positions]
    return result.take(positions), st.data.take(index), index.tolist(), tracker.section(len(ids))


def run_stages(stages: Stages, started: float, watch: BufferWatch, gallery: PictureKeeper) -> Report:
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


def _extra(st: Stages, main: SuiteResult, evaluated: Dataset) -> dict:
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
    st: Stages, main: SuiteResult, evaluated: Dataset, index: list[int] | None, counts: dict, checks: list
) -> Report:
    """The Report of the images evaluated (all of them, or a sequential run's), described by the whole data's digest."""
    config, n = st.config, len(evaluated)
    ids = getattr(evaluated, "filenames", None)
    ids = ids() if callable(ids) else ids  # FolderDataset.filenames is a method
    display = getattr(evaluated, "display_names", None)
    return Report(
        schema_version=SCHEMA_VERSION,
        clean_accuracy=rate(counts["clean_correct"], n),
        robust_accuracy=rate(counts["robust_correct"], n),
        attacks={name: rate(count, n) for name, count in main.after_attack.items()},
        per_class=per_class(main, evaluated.y, evaluated.class_names, st.suite.draws, display),
        n=n,
        eps=config.eps,
        norm=config.norm,
        suite=config.suite_name(),
        attack_list=[repr(a) for a in st.suite.attacks],
        seed=config.seed,
        randomized=st.randomized,
        eot_samples=st.suite.draws,
        model_sha256=getattr(getattr(st.model, "info", None), "sha256", None),
        data_sha256=st.data.sha256(),  # the whole --n set, also when a sequential run stopped early
        **_descriptions(st, n),
        device=str(st.suite.device),
        checks=checks,
        seconds=0.0,
        extra=_extra(st, main, evaluated),
        samples=sample_results(main, evaluated.y, ids, [a.name for a in st.suite.attacks], index),
        counts=counts,
        work={name: _work(w) for name, w in main.work.items()},
    )


def _descriptions(st: Stages, n: int) -> dict:
    """The report's model, data, normalisation and versions sections: what was evaluated, with what."""
    info = getattr(st.model, "info", None)
    data_config = getattr(info, "data_config", None)
    return {
        "model": {
            "path": getattr(info, "path", None),
            "arch": getattr(info, "arch", None),
            "num_classes": getattr(info, "num_classes", None),
            "input_size": getattr(info, "input_size", None),
            "input_size_source": getattr(info, "input_size_source", None),
            "data_config": data_config.to_dict() if data_config is not None else None,
            "label_names": getattr(info, "label_names", None),
        },
        "data": {
            "source": st.data.source,
            "n": n,
            "image_size": list(st.data.image_size),
            "channels": st.data.channels,
            "notes": st.data.notes,
        },
        "normalization": {
            "mean": list(getattr(info, "mean", ()) or ()),
            "std": list(getattr(info, "std", ()) or ()),
            "source": getattr(info, "normalization_source", "unknown"),
        },
        "versions": {
            "hardenctl": __version__,
            "torch": torch.__version__,
            "timm": timm.__version__,
            "python": platform.python_version(),
        },
    }


def _work(work) -> dict:
    """What one attack spent and broke over the whole run (the report's ``work``)."""
    return {
        "seconds": work.seconds,
        "forward_passes": work.forward,
        "backward_passes": work.backward,
        "attacked": work.attacked,
        "broken": work.broken,
    }
