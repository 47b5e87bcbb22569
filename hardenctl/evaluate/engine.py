"""``evaluate``: one model, one dataset, one config → the :class:`~hardenctl.report.Report`.

How the batches run (sharded over ``torchrun`` processes, resumed from a saved state, images kept) is the
:class:`~hardenctl.evaluate.distributed.Execution`'s business; the report does not depend on it.
"""
from __future__ import annotations

import platform
import time

import timm
import torch
from torch import nn

from ..version import __version__
from ..data import ImageDataset
from ..errors import UserError
from ..report import SCHEMA_VERSION, Report, SampleResults
from .checks import buffers_check, large_eps_check, suite_checks, sweep_check
from .config import EvalConfig, Progress
from .distributed import Execution
from .resume import model_digest
from .suite import buffers, is_randomized, run_suite, running_batches, stage_key


def evaluate(model: nn.Module, data: ImageDataset, config: EvalConfig | None = None, progress: Progress | None = None,
             execution: Execution | None = None) -> Report:
    """Evaluate ``model`` ([0, 1] pixels → logits) on ``data`` and return the :class:`Report`.

    ``execution`` shards the batches over ``torchrun`` processes, resumes and keeps images (default: every batch
    here, nothing kept but the report's pictures); every process returns the same, complete report.
    """
    config = config or EvalConfig()
    execution = execution or Execution()
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
    buffers_before = buffers(model)

    probe = data.pixels(0, min(len(data), 16)).to(device)
    torch.manual_seed(config.seed)
    detected = is_randomized(model, probe)
    randomized = bool(config.randomized) or detected or bool(getattr(getattr(model, "info", None), "randomized", False))
    draws = config.eot_samples if randomized else 1

    attacks = config.attacks_for(config.eps, draws)
    execution.begin(model, buffers_before, stage_key("attacks", config.eps, config.norm), [a.name for a in attacks],
                    data.class_names, config.eps, config.norm, lambda: resume_key(model, data, config, attacks, draws, device, execution))
    with running_batches(execution):
        report = _run_stages(model, data, config, progress, execution, attacks, randomized, draws, device, started)
    model.train(was_training)
    return report


def resume_key(model: nn.Module, data: ImageDataset, config: EvalConfig, attacks: list, draws: int, device: torch.device,
               execution: Execution) -> dict:
    """What a saved evaluation state must have been made with to be resumed: everything that decides a batch's result."""
    info = getattr(model, "info", None)
    source = config.attack_model
    return {"model_sha256": getattr(info, "sha256", None) or model_digest(model), "data_sha256": data.sha256(), "n": len(data),
            "eps": config.eps, "norm": config.norm, "suite": config.suite_name(), "attacks": [a.name for a in attacks],
            "apgd_steps": config.apgd_steps, "square_queries": config.square_queries, "seed": config.seed,
            "batch_size": config.batch_size, "eot_samples": draws,
            "eps_sweep": sorted(float(e) for e in config.eps_sweep) if config.eps_sweep else [],
            "large_eps_samples": config.large_eps_samples,
            "attack_model": None if source is None else (getattr(getattr(source, "info", None), "sha256", None) or model_digest(source)),
            "device": device.type, "torch": str(torch.__version__), "hardenctl": str(__version__),
            "save_adversarial": execution.adversarial_dir is not None}


def _run_stages(model: nn.Module, data: ImageDataset, config: EvalConfig, progress: Progress | None, execution: Execution,
                attacks: list, randomized: bool, draws: int, device: torch.device, started: float) -> Report:
    main = run_suite(model, data, attacks, config.eps, config.norm, config.batch_size, config.seed, draws, device, progress, "attacks")
    n = len(data)
    num_classes = getattr(getattr(model, "info", None), "num_classes", None)
    clean_accuracy = float(main.clean_correct.mean())
    robust_accuracy = float(main.robust.float().mean())
    attack_accuracy = {name: count / n for name, count in main.after_attack.items()}

    checks = suite_checks(main, config, randomized, draws, attack_accuracy)
    sweep: list[dict] = []
    if config.eps_sweep:
        for eps in sorted(set(float(e) for e in config.eps_sweep)):
            if abs(eps - config.eps) < 1e-12:
                accuracy = robust_accuracy
            elif eps == 0:
                accuracy = float((main.clean_correct == 1).float().mean())
            else:
                result = run_suite(model, data, config.attacks_for(eps, draws), eps, config.norm, config.batch_size,
                                   config.seed, draws, device, progress, f"eps {eps:.4g}")
                accuracy = float(result.robust.float().mean())
            sweep.append({"eps": eps, "robust_accuracy": accuracy})
        checks.append(sweep_check(sweep, n))
    if config.large_eps_samples > 0:
        checks.append(large_eps_check(model, data.head(config.large_eps_samples), config, draws, device, progress))
    changed, left_training = execution.buffer_changes()  # over every process, and the killed runs a state resumes
    checks.append(buffers_check(changed, left_training))

    per_class = {}
    for label, name in enumerate(data.class_names):
        mask = data.y == label
        count = int(mask.sum())
        if count:
            per_class[str(label)] = {"name": name, "n": count,
                                     "clean_accuracy": float(main.clean_correct[mask].mean()),
                                     "robust_accuracy": float(main.robust[mask].float().mean())}
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
                                               config.protected_cost, num_classes or len(data.class_names), main.robust)
        extra["protected"]["names"] = [data.class_names[i] for i in config.protected if i < len(data.class_names)]
    names = [a.name for a in attacks]
    ids = getattr(data, "filenames", None)
    ids = ids() if callable(ids) else ids  # FolderDataset.filenames is a method
    samples = SampleResults(
        index=list(range(n)), source_id=[str(ids[i]) for i in range(n)] if ids is not None else [f"row {i}" for i in range(n)],
        label=data.y.tolist(), clean_prediction=main.clean_prediction.tolist(), clean_correct=main.clean_correct.tolist(),
        robust=main.robust.tolist(), broken_by=[names[b] if b >= 0 else None for b in main.broken_by.tolist()],
        adversarial_prediction=main.robust_prediction.tolist())
    return Report(
        schema_version=SCHEMA_VERSION,
        clean_accuracy=clean_accuracy,
        robust_accuracy=robust_accuracy,
        attacks=attack_accuracy,
        per_class=per_class,
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
        pictures=execution.pictures(),
    )
