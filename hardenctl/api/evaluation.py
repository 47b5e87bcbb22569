"""The API's evaluation side: load a model and data, evaluate, gate, write the files (what ``hardenctl eval`` does).

Options arrive as the frozen objects of :mod:`hardenctl.options` (built once by the CLI or a notebook) and go on
unchanged to the layer that reads them; a notebook may give their fields as keywords instead.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from .. import models
from ..data import Dataset, load_dataset
from ..distributed import Distributed, rank_device
from ..errors import UserError
from ..evaluation import EvalConfig, Progress
from ..evaluation import evaluate as evaluate_model
from ..gates import GateOptions, gate, load_baseline, sequential_plan
from ..models import ImageClassifier
from ..options import DataOptions, EvalRun, ModelOptions
from ..report import Report, write_report_files

__all__ = [
    "check_label_names",
    "evaluate",
    "gate",
    "load_baseline",
    "load_data",
    "load_model",
    "prepare_data",
    "sequential_plan",
    "write_outputs",
]


def load_model(path: str | Path, options: ModelOptions | None = None, **fields: Any) -> ImageClassifier:
    """Load a model (file, timm model folder, ``local-dir:``, ``hf-hub:``) as an ``nn.Module`` taking [0, 1] pixels
    (normalisation folded in), with its data config resolved (``model.info.data_config``).

    Args:
        path: the model.
        options: how to read it (:class:`~hardenctl.options.ModelOptions`); under torchrun ``device="cuda"`` (or
            ``auto`` with CUDA) means this process's GPU, ``cuda:LOCAL_RANK``.
        **fields: ModelOptions fields, instead of (or on top of) ``options``.
    """
    options = dataclasses.replace(options or ModelOptions(), **fields) if fields else options or ModelOptions()
    return models.load_model(path, options, models.resolve_device(rank_device(options.device)))


def check_label_names(model_names: Sequence[str] | None, data_names: Sequence[str] | None, source: str) -> None:
    """A model that knows its class names and data that has names must agree, class by class: another order or a
    missing class would otherwise be a silent drop to chance accuracy.

    Args:
        model_names: the class names the model declares (None: it declares none).
        data_names: the data's class names (None: only label numbers).
        source: the data's spec, for the error.
    """
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
    none), channels, label range and class names.

    Args:
        model: the model the data will be fed to (its ``info`` says what it expects).
        data: the data, already read.
    """
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
    options: DataOptions | None = None,
    **fields: Any,
) -> Dataset:
    """A dataset spec prepared with the model's data config (timm's eval transform for photos), checked against the
    model (see :func:`prepare_data`). Folders and tars stream; arrays stay in memory.

    Args:
        spec: a data spec (``.npz``, a class-folder directory or tar, a CIFAR batch directory, ``digits``), or a
            Dataset already loaded.
        model: the model the data is prepared for and checked against (None: as stored).
        n: the first n samples (None: all).
        split: ``train`` or ``test`` (which split a spec with both means).
        options: how to read it (:class:`~hardenctl.options.DataOptions`).
        **fields: DataOptions fields, instead of (or on top of) ``options``.
    """
    options = dataclasses.replace(options or DataOptions(), **fields) if fields else options or DataOptions()
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
            workers=options.workers,
            skip_unreadable=options.skip_unreadable,
        )
    return prepare_data(model, data) if model is not None else data


def evaluate(
    model: nn.Module | str | Path,
    data: Dataset | str,
    config: EvalConfig | None = None,
    *,
    run: EvalRun | None = None,
    reading: DataOptions | None = None,
    progress: Progress | None = None,
    log: Callable[[str], None] | None = None,
    **fields: Any,
) -> Report:
    """Evaluate a model (module or checkpoint path) on data (dataset or spec).

    Under ``torchrun`` (and ``run.shard``) the batches are split over the processes and every process returns the
    same, complete report (equal to one process's).

    Args:
        model: the model, or its path (read with default :class:`~hardenctl.options.ModelOptions`; load it with
            :func:`load_model` first for others).
        data: the data, or its spec.
        config: what to measure (:class:`~hardenctl.evaluation.EvalConfig`); its ``sequential`` may also be the
            :class:`~hardenctl.gates.GateOptions` to decide (α 0.05), then gate the report with the same options.
        run: how it runs (:class:`~hardenctl.options.EvalRun`: resume state, adversarial images, pictures, shards).
        reading: how to read ``data`` when it is a spec.
        progress: ``(stage, done, total, metrics=None)`` after every batch and attack.
        log: one line at a time, for what is worth a note (a resumed state, a sequential round's decisions).
        **fields: EvalConfig fields, instead of (or on top of) ``config``.

    >>> report = hardenctl.evaluate("model.safetensors", "digits-test", eps=8/255, suite="quick", n=200)
    >>> report = hardenctl.evaluate(model, "test/", n=1000, sequential=GateOptions(min_robust_acc=0.45))
    >>> hardenctl.gate(report, min_robust_acc=0.45)
    """
    fields = dict(fields)
    if isinstance(fields.get("sequential"), GateOptions):
        options = fields["sequential"]
        baseline = load_baseline(options.baseline, options.baseline_samples) if options.baseline is not None else None
        fields["sequential"] = sequential_plan(options, baseline)
    config = dataclasses.replace(config, **fields) if config is not None and fields else config or EvalConfig(**fields)
    run = run or EvalRun()
    if not isinstance(model, nn.Module):
        model = load_model(model)
    dataset = load_data(data, model, n=config.n, options=reading)
    with torch.inference_mode(False):
        return evaluate_model(
            model, dataset, config, progress, run=run, dist=Distributed.from_env() if run.shard else None, log=log
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

    Args:
        report: the evaluation's report.
        json: the JSON report.
        markdown: the Markdown report (pictures and the ε curve beside it).
        junit: gates and checks as JUnit XML.
        html: one self-contained HTML page.
        samples: the per-sample results.
    """
    from ..evaluation.samples import recorded_name, write_samples
    from ..report.outputs import OutputsNotWritten

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
        notes = write_report_files(report, json, markdown, junit, html)
    except OutputsNotWritten as exc:
        failures += exc.failures
        notes = []
    if failures:
        raise OutputsNotWritten(failures)
    return notes
