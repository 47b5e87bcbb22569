"""The Python API (what notebooks and other tools import); the CLI is a thin layer over it.

Everything ``hardenctl eval`` can do is here: :func:`evaluate` (torchrun shards, ``resume_dir``, ``save_adversarial``),
:func:`gate` (thresholds, a baseline report with its per-sample results, sanity-check acceptance) and
:func:`write_outputs` (JSON, Markdown, JUnit, HTML and the per-sample results file).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from . import models
from .data import ArrayDataset, Dataset, load_dataset
from .distributed import Distributed, rank_device
from .errors import UserError
from .evaluation import EvalConfig, Progress
from .evaluation import evaluate as _evaluate
from .gates import Baseline, GateOptions, gate, load_baseline
from .models import ImageClassifier
from .out_folder import check_out_dir
from .recipes import load_recipe, parse_overrides
from .recipes.base import RecipeConfig
from .report import PICTURES, Report
from .report import write_outputs as _write_outputs
from .sequential_gates import sequential_plan
from .training import HardenResult, RunOptions
from .training import harden as _harden

__all__ = [
    "Baseline",
    "GateOptions",
    "check_label_names",
    "evaluate",
    "gate",
    "harden",
    "load_baseline",
    "load_data",
    "load_model",
    "prepare_data",
    "sequential_plan",
    "write_outputs",
]


def load_model(
    path: str | Path,
    *,
    arch: str | None = None,
    num_classes: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    input_size: tuple[int, int] | None = None,
    crop_pct: float | None = None,
    interpolation: str | None = None,
    crop_mode: str | None = None,
    device: str = "cpu",
) -> ImageClassifier:
    """Load a model (file, timm model folder, ``local-dir:``, ``hf-hub:``) as an ``nn.Module`` taking [0, 1]
    pixels (normalisation folded in), with its data config resolved (``model.info.data_config``). Under torchrun
    ``device="cuda"`` (or ``auto`` with CUDA) means this process's GPU, ``cuda:LOCAL_RANK``."""
    return models.load_model(
        path,
        arch=arch,
        num_classes=num_classes,
        mean=mean,
        std=std,
        input_size=input_size,
        crop_pct=crop_pct,
        interpolation=interpolation,
        crop_mode=crop_mode,
        device=models.resolve_device(rank_device(device)),
    )


def check_label_names(model_names: Sequence[str] | None, data_names: Sequence[str] | None, source: str) -> None:
    """A model that knows its class names and data that has names must agree, class by class: another order or a
    missing class would otherwise be a silent drop to chance accuracy."""
    if not model_names or not data_names:
        return
    for index in range(max(len(model_names), len(data_names))):
        ours = model_names[index] if index < len(model_names) else None
        theirs = data_names[index] if index < len(data_names) else None
        if ours != theirs:
            what = (
                f"the data has no class {index} (the model's {ours!r})"
                if theirs is None
                else f"the data's class {index} {theirs!r} is not one the model knows"
                if ours is None
                else f"class {index} is {theirs!r} in the data but {ours!r} in the model"
            )
            raise UserError(
                f"class names of {source} do not match the model's: {what}",
                "use data with the model's classes in the model's order (class folders sort by name)",
            )


def prepare_data(model: nn.Module, data: Dataset) -> Dataset:
    """Match prepared ``data`` to the model: the input size (recorded from the data when the model declares
    none), channels, label range and class names."""
    info = getattr(model, "info", None)
    if info is None:
        return data
    if info.input_size is None:  # decided with the data: its own size, or the architecture's for photos of mixed sizes
        prepared_by = getattr(data, "config", None)
        info.set_input_size(data.image_size, getattr(prepared_by, "sources", {}).get("input_size", "data"))
    elif tuple(info.input_size) != tuple(data.image_size):
        h, w = info.input_size
        raise UserError(
            f"images are {data.image_size[0]}x{data.image_size[1]} but the model is declared for {h}x{w} "
            f"(from {info.input_size_source})",
            "pass the data by path (it is then prepared with the model's data config), or --input-size",
        )
    data = data.with_channels(info.in_chans)
    if len(data) and int(data.y.max()) >= info.num_classes:
        raise UserError(
            f"label {int(data.y.max())} is out of range for a model with {info.num_classes} classes",
            "use data whose labels are 0..num_classes-1 (or the right --num-classes)",
        )
    check_label_names(info.label_names, data.class_names if getattr(data, "names_known", False) else None, data.source)
    return data


def load_data(
    spec: str | Dataset,
    model: nn.Module | None = None,
    *,
    n: int | None = None,
    split: str = "test",
    workers: int | None = None,
    skip_unreadable: bool = False,
) -> Dataset:
    """Load a dataset spec prepared with the model's data config (timm's eval transform for photos), checked
    against the model (see :func:`prepare_data`). Folders and tars stream; arrays stay in memory."""
    if not isinstance(spec, (str, Path)):
        data = spec.head(n)
    else:
        info = getattr(model, "info", None)
        data = load_dataset(
            str(spec),
            split=split,
            n=n,
            data_config=getattr(info, "data_config", None),
            in_chans=getattr(info, "in_chans", None),
            workers=workers,
            skip_unreadable=skip_unreadable,
        )
    return prepare_data(model, data) if model is not None else data


def evaluate(
    model: nn.Module | str | Path,
    data: ArrayDataset | str,
    *,
    progress: Progress | None = None,
    workers: int | None = None,
    shard: bool = True,
    resume_dir: str | Path | None = None,
    resume: bool = False,
    save_adversarial: str | Path | None = None,
    pictures: int = PICTURES,
    log: Callable[[str], None] | None = None,
    **config: Any,
) -> Report:
    """Evaluate a model (module or checkpoint path) on data (dataset or spec); see :class:`EvalConfig`.

    Under ``torchrun`` (and ``shard=True``) the batches are split over the processes and every process returns the
    same, complete report (equal to one process's). ``resume_dir`` keeps the state after every batch, and
    ``resume=True`` continues a killed evaluation from it; ``save_adversarial`` keeps every sample's worst-case
    point (one ``.npz`` per batch); ``pictures`` examples are kept for the Markdown/HTML report.

    ``sequential`` (a :func:`sequential_plan`, or the :class:`GateOptions` to make one with α 0.05): attack the images in
    a seeded random order, a batch per process and round, and stop once every gate is decided; gate the report with the
    same options (:func:`gate`).

    >>> report = hardenctl.evaluate("model.safetensors", "digits-test", eps=8/255, suite="quick", n=200)
    >>> report.robust_accuracy
    >>> report = hardenctl.evaluate(model, "test/", n=1000, sequential=GateOptions(min_robust_acc=0.45))
    >>> hardenctl.gate(report, min_robust_acc=0.45)
    """
    if isinstance(config.get("sequential"), GateOptions):
        options = config["sequential"]
        config["sequential"] = sequential_plan(
            options, load_baseline(options.baseline, options.baseline_samples) if options.baseline is not None else None
        )
    cfg = EvalConfig(**config)
    if not isinstance(model, nn.Module):
        model = load_model(model)
    dataset = load_data(data, model, n=cfg.n, workers=workers)
    with torch.inference_mode(False):
        return _evaluate(
            model,
            dataset,
            cfg,
            progress,
            dist=Distributed.from_env() if shard else None,
            resume_dir=resume_dir,
            resume=resume,
            save_adversarial=save_adversarial,
            pictures=pictures,
            log=log,
        )


def write_outputs(
    report: Report,
    *,
    json: str | Path | None = None,
    markdown: str | Path | None = None,
    junit: str | Path | None = None,
    html: str | Path | None = None,
    samples: str | Path | None = None,
) -> list[str]:
    """Write the requested files (each atomically) and return notes (e.g. a plot skipped).

    ``samples`` (the per-sample results, JSON lines) is written first, so a report never names a samples file
    that is not there; the report records it relative to its own folder. Each output is attempted even when an
    earlier one fails; :class:`~hardenctl.report.outputs.OutputsNotWritten` names every failure after all were tried.
    """
    from .evaluation.samples import recorded_name, write_samples
    from .report.outputs import OutputsNotWritten

    failures: list[tuple[Path, BaseException]] = []
    if samples is not None:
        try:
            write_samples(report, samples)
            report.samples_file = recorded_name(samples, json)
        except UserError:
            raise
        except Exception as exc:  # the reports are still written; every failure is raised after them
            failures.append((Path(samples), exc))
    try:
        notes = _write_outputs(report, json, markdown, junit, html)
    except OutputsNotWritten as exc:
        failures += exc.failures
        notes = []
    if failures:
        raise OutputsNotWritten(failures)
    return notes


def harden(
    checkpoint: str | Path | ImageClassifier,
    *,
    data: str | ArrayDataset,
    out: str | Path,
    recipe: str | Path = "mart",
    eval_data: str | ArrayDataset | None = None,
    overrides: Mapping[str, Any] | Sequence[str] | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | str | None = None,
    seed: int = 0,
    device: str = "auto",
    resume: bool = False,
    overwrite: bool = False,
    eval_n: int | None = 1000,
    suite: str = "standard",
    eps: float = 8 / 255,
    eval_options: Mapping[str, Any] | None = None,
    input_report: Report | None = None,
    amp: str = "auto",
    channels_last: bool = False,
    arch: str | None = None,
    num_classes: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    input_size: tuple[int, int] | None = None,
    crop_pct: float | None = None,
    interpolation: str | None = None,
    crop_mode: str | None = None,
    workers: int | None = None,
    skip_unreadable: bool = False,
    progress: Any = None,
    log: Any = None,
) -> HardenResult | None:
    """Harden a checkpoint with a recipe and write ``out``: model, resolved recipe, report, training log.

    ``recipe`` is a name (``mart``, ``pgd-at``, ``trades``, ``standard``) or a YAML path;
    ``overrides`` (a mapping or ``["key=value", ...]``) and ``epochs``/``batch_size``/``lr`` change
    its parameters. The input and hardened models are evaluated on ``eval_data`` (default: the
    held-out split of ``data``) with the same ``suite``, ``eps``, seed and first ``eval_n`` samples;
    ``input_report`` (an earlier result's ``report.input``) skips re-evaluating the same input model
    when it was made with exactly these settings. ``--out`` must be new, empty, or an earlier run's with ``resume``
    (continue it) or ``overwrite`` (replace it; also needed to write into a folder holding other files). Returns None
    on DDP ranks other than 0.

    >>> result = hardenctl.api.harden("model.safetensors", data="digits-train", out="hardened", recipe="mart",
    ...                               epochs=5, overrides={"eps": 0.1}, eval_data="digits-test", suite="quick")
    >>> result.report.hardened.robust_accuracy
    """
    values = dict(overrides) if isinstance(overrides, Mapping) else parse_overrides(overrides or [])
    for key, value in (("epochs", epochs), ("batch_size", batch_size), ("lr", lr)):
        if value is None:
            continue
        RecipeConfig.from_mapping({key: value}, f"--{key.replace('_', '-')}")  # its error names the flag, not --set
        if key in values and values[key] != value:
            raise UserError(f"--{key.replace('_', '-')} {value} contradicts --set {key}={values[key]}", "give it once")
        values[key] = value
    chosen = load_recipe(recipe, values)
    if eval_n is not None and eval_n < 1:
        raise UserError(f"--eval-n must be at least 1, got {eval_n}", "pass e.g. --eval-n 1000")
    check_out_dir(Path(out), resume, overwrite)  # before any model is loaded: a run that cannot be written never starts
    if isinstance(checkpoint, nn.Module):
        model = checkpoint
    else:
        model = load_model(
            checkpoint,
            arch=arch,
            num_classes=num_classes,
            mean=mean,
            std=std,
            input_size=input_size,
            crop_pct=crop_pct,
            interpolation=interpolation,
            crop_mode=crop_mode,
            device="cpu",
        )
    reading = dict(workers=workers, skip_unreadable=skip_unreadable)
    train_set = load_data(data, model, split="train", **reading)
    if getattr(chosen.config, "protected", None):  # cost-sensitive: class names → ids of this training data
        from .protected import resolve_protected

        resolved = tuple(resolve_protected(chosen.config.protected, train_set.class_names))
        chosen.config = dataclasses.replace(chosen.config, protected=resolved)
    eval_set = load_data(eval_data, model, split="test", **reading) if eval_data is not None else None
    options = RunOptions(
        out_dir=Path(out),
        seed=seed,
        device=device,
        amp=amp,
        channels_last=channels_last,
        resume=resume,
        overwrite=overwrite,
        workers=workers,
        eval_n=eval_n,
        eval_options={"suite": suite, "eps": eps, **(eval_options or {})},
        input_report=input_report,
    )
    with torch.inference_mode(False):
        return _harden(model, chosen, train_set, eval_set, options, progress, log)
