"""``evaluate``: one model, one dataset, one config → the :class:`~hardenctl.report.Report`.

How the batches run (sharded over ``torchrun`` processes, resumed from a saved state, images kept) is the business
of the :class:`~hardenctl.evaluate.runner.EvalRunner` built here from its parts and passed to every ``run_suite``;
the report does not depend on it.
"""
from __future__ import annotations

import contextlib
import dataclasses
import platform
import time
from pathlib import Path
from typing import Callable

import timm
import torch
from torch import nn

from ..version import __version__
from ..data import ArrayDataset
from ..distributed import Distributed
from ..errors import UserError
from ..files import FolderLock
from ..report import PICTURES, SCHEMA_VERSION, Report
from .adversarial import AdversarialWriter
from .batching import auto_batch_size
from .checks import buffers_check, large_eps_check, suite_checks, sweep_check
from .config import EvalConfig, Progress, search_precision
from .gallery import PictureKeeper
from .results import per_class, rate, robust_count, sample_results, suite_counts
from .resume import EvalState, model_digest
from .runner import EvalRunner
from .sharding import Shards
from .suite import is_randomized, run_suite, stage_key
from .watch import BufferWatch, snapshot_buffers


def evaluate(model: nn.Module, data: ArrayDataset, config: EvalConfig | None = None, progress: Progress | None = None, *,
             dist: Distributed | None = None, resume_dir: str | Path | None = None, resume: bool = False,
             save_adversarial: str | Path | None = None, pictures: int = PICTURES,
             log: Callable[[str], None] | None = None) -> Report:
    """Evaluate ``model`` ([0, 1] pixels → logits) on ``data`` and return the :class:`Report`.

    ``dist`` (e.g. ``Distributed.from_env()`` under torchrun) shards the batches over the processes, every one of
    which returns the same, complete report; ``resume_dir`` keeps the state after every batch (``resume=True``
    continues a killed run from it); ``save_adversarial`` keeps every worst-case point in that directory;
    ``pictures`` is how many examples the report draws; ``log`` hears what is worth a note (a resumed state).
    """
    config = config or EvalConfig()
    if resume and resume_dir is None:
        raise UserError("--resume needs --resume-dir (where the killed evaluation kept its state)",
                        "pass --resume-dir DIR, the directory of the killed run")
    if pictures < 0:
        raise UserError(f"--pictures must be >= 0, got {pictures}", "pass e.g. --pictures 8, or 0 for none")
    started = time.perf_counter()
    data = data.head(config.n)
    if len(data) == 0:
        raise UserError(f"no samples to evaluate in {data.source}", "pass data with at least one image (a gate on nothing never passes)")
    device = next(model.parameters()).device
    num_classes = getattr(getattr(model, "info", None), "num_classes", None)
    if num_classes is not None and len(data) and int(data.y.max()) >= num_classes:
        raise UserError(f"the data has label {int(data.y.max())} but the model has {num_classes} classes",
                        "use data whose labels are 0..num_classes-1, or the matching model")
    was_training = model.training
    model.eval()
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
    shown_names = getattr(data, "display_names", None) or data.class_names  # people's names in pictures, ids for matching
    gallery = PictureKeeper(pictures, main_stage, shown_names, config.eps, config.norm)
    keepers = [gallery]
    if save_adversarial is not None:
        writer = AdversarialWriter(save_adversarial, main_stage, [a.name for a in attacks])
        writer.check(resume)
        keepers.append(writer)
    keepers.append(watch)
    with shards.joined(device), contextlib.ExitStack() as locks:
        if shards.dist.rank == 0:  # one run per state or image folder: a second one is refused, naming the first
            for folder, option in ((resume_dir, "--resume-dir"), (save_adversarial, "--save-adversarial")):
                if folder is not None:
                    locks.enter_context(FolderLock(folder, option))
        batch_choice = None
        if config.batch_size == "auto":
            size, batch_choice = auto_batch_size(model, probe, len(data), device, shards.dist.world_size)
            size = min(shards.gather(size))  # every process must cut the same batches
            batch_choice["chosen"] = size
            config = dataclasses.replace(config, batch_size=size)
            if log is not None:
                log(f"--batch-size auto: {size} ({batch_choice['bytes_per_image'] / 2**20:.1f} MiB per image, "
                    f"{batch_choice['free_bytes'] / 2**30:.1f} GiB free)")
        execution = {"search_precision": config.precision, "verdict_precision": "fp32", "precision_requested": requested_precision,
                     "batch_size": config.batch_size, "batch_size_auto": batch_choice}
        state = None
        if resume_dir is not None:
            key = resume_key(model, data, config, attacks, draws, device, save_adversarial is not None)
            state = EvalState.open(resume_dir, key, resume, shards.dist.rank, shards.dist.world_size)
            if state.resumed_batches and log is not None:
                log(f"resumed from {resume_dir}: {state.resumed_batches} batches were finished before")
        if resume_dir is not None or save_adversarial is not None:
            shards.barrier()  # every process looks at the directories before any writes there (a fresh run must not see a sibling's file)
        runner = EvalRunner(shards, state, keepers)
        report = _run_stages(model, data, config, progress, runner, attacks, randomized, draws, device, started, watch, gallery)
        report.execution = execution
    model.train(was_training)
    return report


def resume_key(model: nn.Module, data: ArrayDataset, config: EvalConfig, attacks: list, draws: int, device: torch.device,
               save_adversarial: bool) -> dict:
    """What a saved evaluation state must have been made with to be resumed: everything that decides a batch's result."""
    info = getattr(model, "info", None)
    source = config.attack_model
    return {"model_sha256": getattr(info, "sha256", None) or model_digest(model), "data_sha256": data.sha256(), "n": len(data),
            "eps": config.eps, "norm": config.norm, "suite": config.suite_name(), "attacks": [a.name for a in attacks],
            "apgd_steps": config.apgd_steps, "square_queries": config.square_queries, "seed": config.seed,
            "batch_size": config.batch_size, "eot_samples": draws, "precision": config.precision,
            "eps_sweep": sorted(float(e) for e in config.eps_sweep) if config.eps_sweep else [],
            "large_eps_samples": config.large_eps_samples,
            "attack_model": None if source is None else (getattr(getattr(source, "info", None), "sha256", None) or model_digest(source)),
            "device": device.type, "torch": str(torch.__version__), "hardenctl": str(__version__),
            "save_adversarial": save_adversarial}


def _run_stages(model: nn.Module, data: ArrayDataset, config: EvalConfig, progress: Progress | None, runner: EvalRunner,
                attacks: list, randomized: bool, draws: int, device: torch.device, started: float, watch: BufferWatch,
                gallery: PictureKeeper) -> Report:
    main = run_suite(model, data, attacks, config.eps, config.norm, config.batch_size, config.seed, draws, device, progress,
                     "attacks", runner)
    n = len(data)
    num_classes = getattr(getattr(model, "info", None), "num_classes", None)
    counts = suite_counts(main, draws)
    clean_accuracy, robust_accuracy = rate(counts["clean_correct"], n), rate(counts["robust_correct"], n)
    attack_accuracy = {name: rate(count, n) for name, count in main.after_attack.items()}

    checks = suite_checks(main, config, randomized, draws, attack_accuracy)
    sweep: list[dict] = []
    if config.eps_sweep:
        for eps in sorted(set(float(e) for e in config.eps_sweep)):
            if abs(eps - config.eps) < 1e-12:
                accuracy = robust_accuracy
            elif eps == 0:
                accuracy = rate(robust_count(main.clean_correct == 1), n)
            else:
                result = run_suite(model, data, config.attacks_for(eps, draws), eps, config.norm, config.batch_size,
                                   config.seed, draws, device, progress, f"eps {eps:.4g}", runner)
                accuracy = rate(robust_count(result.robust), n)
            sweep.append({"eps": eps, "robust_accuracy": accuracy})
        checks.append(sweep_check(sweep, n))
    if config.large_eps_samples > 0:
        checks.append(large_eps_check(model, data.head(config.large_eps_samples), config, draws, device, progress, runner))
    changed, left_training = watch.changes(runner.shards)  # over every process, and the killed runs a state resumes
    checks.append(buffers_check(changed, left_training))

    classes = per_class(main, data.y, data.class_names, draws, getattr(data, "display_names", None))
    info = getattr(model, "info", None)
    extra = {}
    describe = getattr(model, "report_section", None)  # e.g. AToP's composite: its transform, and fixed or random
    if describe is not None:
        extra["purifier"] = describe()
    if config.attack_model is not None:
        extra["transferred"] = {"source": getattr(getattr(config.attack_model, "info", None), "arch", type(config.attack_model).__name__),
                                "summary": "attacks computed on the classifier alone and scored on the whole model "
                                           "(classifier-only, BPDA): an optimistic number, not a robustness claim"}
    if config.protected:
        from ..protected import protected_metrics

        extra["protected"] = protected_metrics(data.y, main.clean_correct, main.robust_prediction, config.protected,
                                               config.protected_cost, num_classes or len(data.class_names), main.robust, draws)
        extra["protected"]["names"] = [data.class_names[i] for i in config.protected if i < len(data.class_names)]
    ids = getattr(data, "filenames", None)
    ids = ids() if callable(ids) else ids  # FolderDataset.filenames is a method
    samples = sample_results(main, data.y, ids, [a.name for a in attacks])
    return Report(
        schema_version=SCHEMA_VERSION,
        clean_accuracy=clean_accuracy,
        robust_accuracy=robust_accuracy,
        attacks=attack_accuracy,
        per_class=classes,
        n=n,
        eps=config.eps,
        norm=config.norm,
        suite=config.suite_name(),
        attack_list=[repr(a) for a in attacks],
        seed=config.seed,
        randomized=randomized,
        eot_samples=draws,
        model_sha256=getattr(info, "sha256", None),
        data_sha256=data.sha256(),
        model={"path": getattr(info, "path", None), "arch": getattr(info, "arch", None),
               "num_classes": getattr(info, "num_classes", None), "input_size": getattr(info, "input_size", None),
               "input_size_source": getattr(info, "input_size_source", None),
               "data_config": info.data_config.to_dict() if getattr(info, "data_config", None) is not None else None,
               "label_names": getattr(info, "label_names", None)},
        data={"source": data.source, "n": n, "image_size": list(data.image_size), "channels": data.channels, "notes": data.notes},
        normalization={"mean": list(getattr(info, "mean", ()) or ()), "std": list(getattr(info, "std", ()) or ()),
                       "source": getattr(info, "normalization_source", "unknown")},
        versions={"hardenctl": __version__, "torch": torch.__version__, "timm": timm.__version__, "python": platform.python_version()},
        device=str(device),
        eps_sweep=sweep,
        checks=checks,
        seconds=time.perf_counter() - started,
        extra=extra,
        samples=samples,
        pictures=gallery.pictures(runner.shards),
        counts=counts,
        work={name: {"seconds": w.seconds, "forward_passes": w.forward, "backward_passes": w.backward, "attacked": w.attacked,
                     "broken": w.broken} for name, w in main.work.items()},
    )
