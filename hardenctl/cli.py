"""``hardenctl`` command line: parse, call the API, print through one output sink.

Exit codes: 0 success and every gate passed · 1 a gate failed · 2 bad input or usage.

torch and timm take seconds to import, so this module imports them (through ``api``) only inside
the commands that need them: ``--help``, ``--version``, ``recipes`` and argument errors answer at once.
"""
from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Iterator, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from . import __version__
from .errors import EXIT_GATE_FAILED, EXIT_OK, EXIT_USAGE, UserError, missing_file
from .gates import CHECK_NAMES, apply_gates, check_comparable, describe_failure
from .report import Report, load_report, write_outputs

try:  # typer >= 0.20 carries its own copy of click
    from typer._click import exceptions as cli_errors
except ImportError:  # pragma: no cover - older typer on top of click
    from click import exceptions as cli_errors

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
                  help="Make timm image classifiers robust to adversarial attacks, and measure it honestly.")


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"hardenctl {__version__}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="Print the version and exit")] = False,
) -> None:
    """Make timm image classifiers robust to adversarial attacks, and measure it honestly."""


def _api():
    """The API module, imported on first use (it imports torch and timm)."""
    from . import api

    return api


def _require_model(spec: str) -> None:
    """A mistyped path is a one-line error before torch is imported (``hf-hub:`` specs are checked when loaded)."""
    text = str(spec)
    if text.startswith(("hf-hub:", "hf_hub:")):
        return
    path = Path(text.split(":", 1)[1] if text.startswith("local-dir:") else text)
    if not path.exists():
        raise missing_file(path, "model folder" if text.startswith("local-dir:") else "checkpoint")


class Output:
    """The one output sink: tables to stdout for people, JSON to stdout for machines, notes to stderr."""

    def __init__(self, quiet: bool = False, as_json: bool = False):
        self.quiet, self.as_json = quiet, as_json
        self.out = Console(highlight=False)
        self.err = Console(stderr=True, highlight=False)

    def note(self, message: str) -> None:
        if not self.quiet:
            self.err.print(message, soft_wrap=True)

    def warn(self, message: str) -> None:
        if not self.as_json or not self.quiet:
            self.err.print(f"[yellow]warning:[/yellow] {message}", soft_wrap=True)

    def table(self, renderable) -> None:
        if not self.quiet and not self.as_json:
            self.out.print(renderable)

    def json(self, text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    @contextmanager
    def progress(self) -> Iterator:
        """A rich progress bar callback ``(stage, done, total)``; a no-op when quiet or JSON."""
        if self.quiet or self.as_json or not self.err.is_terminal and not _force_progress():
            yield None
            return
        bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=self.err, transient=True)
        tasks: dict[str, int] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bars.add_task(stage, total=total)
            bars.update(tasks[stage], completed=done)

        with bars:
            yield update


def _force_progress() -> bool:
    import os

    return os.environ.get("HARDENCTL_PROGRESS") == "1"


# ---------------------------------------------------------------------------------------------
# option parsing: every bad value is a one-line UserError
# ---------------------------------------------------------------------------------------------
def parse_number(text: str, option: str) -> float:
    """A float or a fraction such as ``8/255``."""
    try:
        if "/" in text:
            num, den = text.split("/", 1)
            value = float(num) / float(den)
        else:
            value = float(text)
    except (ValueError, ZeroDivisionError):
        raise UserError(f"{option}: {text!r} is not a number", f"pass e.g. {option} 8/255 or {option} 0.031") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise UserError(f"{option}: {text!r} is not a finite number", f"pass e.g. {option} 8/255")
    return value


def parse_eps(text: str, norm: str, option: str = "--eps") -> float:
    value = parse_number(text, option)
    if value < 0:
        raise UserError(f"{option} must be >= 0, got {text}", f"pass e.g. {option} 8/255")
    if norm == "linf" and value > 1:
        raise UserError(f"{option} {text} exceeds 1, the whole [0,1] pixel range", "give eps in [0,1] pixel units, e.g. 8/255")
    return value


def parse_list(text: Optional[str], option: str, count: int | None = None) -> list[float] | None:
    if text is None:
        return None
    values = [parse_number(part.strip(), option) for part in text.split(",") if part.strip()]
    if not values or (count is not None and len(values) != count):
        raise UserError(f"{option}: expected {count or 'one or more'} comma-separated numbers, got {text!r}", f"pass e.g. {option} 0.5,0.5,0.5")
    return values


def parse_size(text: Optional[str]) -> tuple[int, int] | None:
    if text is None:
        return None
    parts = text.replace("x", ",").split(",")
    try:
        size = tuple(int(p) for p in parts)
    except ValueError:
        size = ()
    if len(size) == 1:
        size = (size[0], size[0])
    if len(size) != 2 or min(size) < 1:
        raise UserError(f"--input-size: {text!r} is not H,W", "pass e.g. --input-size 32,32")
    return size  # type: ignore[return-value]


def parse_fraction(value: Optional[float], option: str) -> Optional[float]:
    if value is not None and not 0 <= value <= 1:
        raise UserError(f"{option} is a fraction in [0,1], got {value}", f"pass e.g. {option} 0.45")
    return value


# ---------------------------------------------------------------------------------------------
# commands
# ---------------------------------------------------------------------------------------------
Checkpoint = Annotated[str, typer.Argument(help="Model: .safetensors, timm train.py .pth/.pth.tar, a state_dict .pt, a timm model folder (config.json + weights; also local-dir:PATH) or hf-hub:ORG/NAME")]
# Model-loading options shared by every command that reads a checkpoint.
ArchOption = Annotated[Optional[str], typer.Option(help="timm architecture, when the checkpoint does not say")]
NumClassesOption = Annotated[Optional[int], typer.Option(help="Number of classes, when the checkpoint does not say")]
MeanOption = Annotated[Optional[str], typer.Option(help="Normalisation mean r,g,b (when the checkpoint has none)")]
StdOption = Annotated[Optional[str], typer.Option(help="Normalisation std r,g,b")]
InputSizeOption = Annotated[Optional[str], typer.Option(help="Input size H,W: overrides the model's data config (passed to timm as img_size where needed)")]
ResizeOption = Annotated[bool, typer.Option(help="Stretch every image to the input size (same as --crop-mode squash --crop-pct 1)")]
CropPctOption = Annotated[Optional[str], typer.Option(help="Eval resize: short side to size/crop_pct, then centre crop, as timm does (0 < p <= 1)")]
InterpolationOption = Annotated[Optional[str], typer.Option(help="Resize interpolation: bilinear, bicubic, nearest, lanczos, box, hamming")]
CropModeOption = Annotated[Optional[str], typer.Option(help="timm crop mode: center, squash or border")]
WorkersOption = Annotated[Optional[int], typer.Option(help="DataLoader worker processes for image folders (default: cores available, at most 8; 0: in-process)")]
SkipUnreadableOption = Annotated[bool, typer.Option(help="Skip corrupt or unreadable images (counted in the report) instead of stopping")]


def model_options(arch, num_classes, mean, std, input_size, resize, crop_pct, interpolation, crop_mode) -> dict:
    """The model-loading and data-config flags shared by every command that reads a model, parsed and checked."""
    from .models.data_config import check_crop_mode, check_crop_pct, check_interpolation

    if resize and (crop_pct is not None or crop_mode is not None):
        raise UserError("--resize is --crop-mode squash --crop-pct 1; it cannot be combined with either", "give one of them")
    options = dict(arch=arch, num_classes=num_classes, mean=parse_list(mean, "--mean"), std=parse_list(std, "--std"),
                   input_size=parse_size(input_size),
                   crop_pct=check_crop_pct(parse_number(crop_pct, "--crop-pct")) if crop_pct is not None else None,
                   interpolation=check_interpolation(interpolation) if interpolation is not None else None,
                   crop_mode=check_crop_mode(crop_mode) if crop_mode is not None else None)
    if resize:
        options.update(crop_mode="squash", crop_pct=1.0)
    return options


def data_options(workers: Optional[int], skip_unreadable: bool) -> dict:
    if workers is not None and workers < 0:
        raise UserError(f"--workers must be >= 0, got {workers}", "pass e.g. --workers 4 (0: read in the main process)")
    return dict(workers=workers, skip_unreadable=skip_unreadable)


@app.command("eval")
def eval_command(
    checkpoint: Checkpoint,
    data: Annotated[str, typer.Option(help="Data: .npz (uint8 x N×H×W×C, int y), an ImageFolder dir, a CIFAR batch dir, or 'digits'")],
    arch: ArchOption = None,
    num_classes: NumClassesOption = None,
    mean: MeanOption = None,
    std: StdOption = None,
    input_size: InputSizeOption = None,
    resize: ResizeOption = False,
    crop_pct: CropPctOption = None,
    interpolation: InterpolationOption = None,
    crop_mode: CropModeOption = None,
    workers: WorkersOption = None,
    skip_unreadable: SkipUnreadableOption = False,
    n: Annotated[int, typer.Option(help="Evaluate the first n samples")] = 1000,
    batch_size: Annotated[int, typer.Option(help="Batch size")] = 128,
    eps: Annotated[str, typer.Option(help="Perturbation radius in [0,1] pixel units; fractions like 8/255 are fine")] = "8/255",
    norm: Annotated[str, typer.Option(help="Threat model: linf or l2")] = "linf",
    suite: Annotated[str, typer.Option(help="quick (PGD-20 + APGD-CE), standard (APGD-CE → APGD-T → Square), autoattack (reference package)")] = "standard",
    attacks: Annotated[Optional[str], typer.Option(help="Custom attack list instead of a suite: fgsm,pgd,apgd-ce,apgd-t,square")] = None,
    eot_samples: Annotated[int, typer.Option(help="EOT draws per gradient and per re-scoring, for randomised models")] = 20,
    randomized: Annotated[bool, typer.Option(help="Treat the model as randomised (EOT) even if not detected")] = False,
    eps_sweep: Annotated[Optional[str], typer.Option(help="Also evaluate at these radii, e.g. 0,2/255,4/255,8/255")] = None,
    apgd_steps: Annotated[int, typer.Option(help="APGD iterations")] = 100,
    square_queries: Annotated[int, typer.Option(help="Square attack queries per point")] = 5000,
    seed: Annotated[int, typer.Option(help="Random seed (the report repeats exactly on CPU)")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N")] = "auto",
    report: Annotated[Optional[Path], typer.Option(help="Write the JSON report here")] = None,
    markdown: Annotated[Optional[Path], typer.Option(help="Write a Markdown report here")] = None,
    junit: Annotated[Optional[Path], typer.Option(help="Write checks and gates as JUnit XML here")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON report on stdout")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress or table")] = False,
    min_clean_acc: Annotated[Optional[float], typer.Option(help="Gate: fail (exit 1) below this clean accuracy")] = None,
    min_robust_acc: Annotated[Optional[float], typer.Option(help="Gate: fail (exit 1) below this robust accuracy")] = None,
    baseline: Annotated[Optional[Path], typer.Option(help="Gate: compare with an earlier report.json (same eps, norm, suite, n and data)")] = None,
    max_drop: Annotated[Optional[float], typer.Option(help="Gate: largest allowed drop from --baseline (default 0)")] = None,
    baseline_samples: Annotated[Optional[Path], typer.Option(help="The --baseline's per-sample results (its --samples file) for a paired, per-sample comparison; default: the file the baseline report recorded, else BASELINE.samples.jsonl beside it")] = None,
    gate_on: Annotated[str, typer.Option(help="--min-*-acc gates compare with the point estimate (point) or the 95% Wilson interval's lower bound (lower)")] = "point",
    samples: Annotated[Optional[Path], typer.Option(help="Write per-sample results here (JSON lines, with a header naming this report)")] = None,
    strict: Annotated[bool, typer.Option(help="A failed sanity check fails the gate (default); --no-strict accepts every failure, recorded in the report")] = True,
    allow_check: Annotated[Optional[list[str]], typer.Option(help="Accept this failed sanity check knowingly (repeatable); recorded in the report")] = None,
    protected: Annotated[Optional[str], typer.Option(help="Protected classes, ids or class names, e.g. 3,5: adds their clean/robust accuracy and the cost-weighted robust error")] = None,
    protected_cost: Annotated[float, typer.Option(help="Cost of misclassifying a protected class (others cost 1)")] = 10.0,
    min_protected_robust_acc: Annotated[Optional[float], typer.Option(help="Gate: fail (exit 1) below this robust accuracy on protected classes (needs --protected)")] = None,
    fixed_mask: Annotated[bool, typer.Option(help="AToP composite: one noise and mask from --seed for every image (deterministic, for debugging; not the deployed defence)")] = False,
    html: Annotated[Optional[Path], typer.Option(help="Write a self-contained HTML report here (tables, pictures and the eps curve embedded)")] = None,
    pictures: Annotated[int, typer.Option(help="Adversarial examples drawn for the Markdown/HTML report, beside their clean images (0: none)")] = 8,
    save_adversarial: Annotated[Optional[Path], typer.Option(help="Keep every sample's worst-case adversarial image in this directory (float32, lossless: one .npz per batch, named by sample index)")] = None,
    resume_dir: Annotated[Optional[Path], typer.Option(help="Keep the evaluation's state in this directory, saved after every batch (one file per process)")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the killed evaluation whose state is in --resume-dir")] = False,
) -> None:
    """Measure clean and robust accuracy of a checkpoint and gate on it.

    Several GPUs, CPU processes or nodes: torchrun --nproc_per_node=N -m hardenctl eval ... (batches are split
    over the processes; the report is the same as one process's, and only rank 0 writes it).
    """
    import os

    main_process = os.environ.get("RANK", "0") == "0"  # under torchrun only rank 0 prints and writes the report
    out = Output(quiet or not main_process, as_json and main_process)
    if resume and resume_dir is None:
        raise UserError("--resume needs --resume-dir (where the killed evaluation kept its state)", "pass --resume-dir DIR")
    if pictures < 0:
        raise UserError(f"--pictures must be >= 0, got {pictures}", "pass e.g. --pictures 8, or 0 for none")
    if norm not in ("linf", "l2"):
        raise UserError(f"--norm must be linf or l2, got {norm!r}", "pass --norm linf or --norm l2")
    eps_value = parse_eps(eps, norm)
    sweep = [parse_eps(part, norm, "--eps-sweep") for part in eps_sweep.split(",")] if eps_sweep else None
    for value, option in ((min_clean_acc, "--min-clean-acc"), (min_robust_acc, "--min-robust-acc"), (max_drop, "--max-drop"),
                          (min_protected_robust_acc, "--min-protected-robust-acc")):
        parse_fraction(value, option)
    protected_items = [p.strip() for p in protected.split(",") if p.strip()] if protected is not None else None
    if protected is not None and not protected_items:
        raise UserError(f"--protected: {protected!r} names no class", "pass ids or class names, e.g. --protected 3,5")
    if min_protected_robust_acc is not None and protected_items is None:
        raise UserError("--min-protected-robust-acc needs --protected", "pass e.g. --protected 3,5")
    if protected_cost < 0:
        raise UserError(f"--protected-cost must be >= 0, got {protected_cost}", "pass e.g. --protected-cost 10")
    if max_drop is not None and baseline is None:
        raise UserError("--max-drop needs --baseline", "pass --baseline old_report.json")
    if baseline_samples is not None and baseline is None:
        raise UserError("--baseline-samples needs --baseline", "pass --baseline old_report.json too")
    if gate_on not in ("point", "lower"):
        raise UserError(f"--gate-on must be point or lower, got {gate_on!r}", "pass --gate-on point or --gate-on lower")
    for value, option in ((n, "--n"), (batch_size, "--batch-size"), (eot_samples, "--eot-samples"), (apgd_steps, "--apgd-steps"), (square_queries, "--square-queries")):
        if value < 1:
            raise UserError(f"{option} must be at least 1, got {value}", f"pass a positive {option}")
    attack_names = [a.strip() for a in attacks.split(",") if a.strip()] if attacks is not None else None
    unknown_checks = sorted(set(allow_check or ()) - set(CHECK_NAMES))
    if unknown_checks:
        raise UserError(f"--allow-check: unknown check {unknown_checks[0]!r}", f"use one of {', '.join(CHECK_NAMES)}")
    baseline_report = load_report(baseline) if baseline else None
    loading = model_options(arch, num_classes, mean, std, input_size, resize, crop_pct, interpolation, crop_mode)
    reading = data_options(workers, skip_unreadable)
    _require_model(checkpoint)
    api = _api()
    config = dict(eps=eps_value, norm=norm, suite=suite, attacks=attack_names, n=n, batch_size=batch_size, seed=seed,
                  eot_samples=eot_samples, eps_sweep=sweep, apgd_steps=apgd_steps, square_queries=square_queries,
                  randomized=True if randomized else None)
    eval_config = api.EvalConfig(**config)
    eval_config.build_attacks(eps_value, 1)  # validate suite/attack names before any loading
    if baseline_report is not None:
        check_comparable({"eps": eps_value, "norm": norm, "suite": eval_config.suite_name(),
                          "attacks": [a.name for a in eval_config.build_attacks(eps_value, 1)]}, baseline_report)
        from .evaluate.samples import baseline_samples_candidates, load_baseline_samples

        baseline_samples, baseline_results = load_baseline_samples(baseline, baseline_report, baseline_samples)
        if baseline_results is None:
            out.note(f"no per-sample results for the baseline (looked for {', '.join(map(str, baseline_samples_candidates(baseline, baseline_report)))}): "
                     "the max_drop gates compare rates; pass --baseline-samples for a paired comparison")

    from .distributed import Distributed
    from .evaluate.distributed import Execution, rank_device

    dist = Distributed.from_env()
    model = api.load_model(checkpoint, device=rank_device(device, dist), **loading)
    if fixed_mask:
        if not hasattr(model, "set_fixed_mask"):
            raise UserError("--fixed-mask applies only to a model with a random transform (an AToP composite)", "drop --fixed-mask")
        model.set_fixed_mask(seed)
    dataset = api.load_data(data, model, n=n, **reading)
    if baseline_report is not None:  # refuse before spending attack time, not after
        check_comparable({"n": len(dataset), "data_sha256": dataset.sha256()}, baseline_report)
    if protected_items is not None:
        from .protected import resolve_protected

        config.update(protected=resolve_protected(protected_items, dataset.class_names), protected_cost=protected_cost)
    import torch

    from .evaluate import evaluate as run_evaluation

    execution = Execution(dist, resume_dir, resume, save_adversarial, pictures)
    with out.progress() as progress, execution.process_group(next(model.parameters()).device), torch.inference_mode(False):
        result = run_evaluation(model, dataset, api.EvalConfig(**config), progress, execution)
    if execution.state is not None and execution.state.resumed_batches:
        out.note(f"resumed from {resume_dir}: {execution.state.resumed_batches} batches were finished before")
    apply_gates(result, min_clean_acc, min_robust_acc, baseline_report, max_drop, strict, min_protected_robust_acc,
                allowed_checks=allow_check or (), gate_on=gate_on, baseline_name=str(baseline or "the baseline"),
                baseline_samples=baseline_results if baseline_report is not None else None,
                baseline_samples_name=str(baseline_samples) if baseline_samples is not None else None)
    if not main_process:  # every process holds the whole report; rank 0 writes it, the others only share its exit code
        if result.failed_gates:
            raise typer.Exit(EXIT_GATE_FAILED)
        return
    finish(result, out, report, markdown, junit, samples=samples, html=html)


def finish(result: Report, out: Output, report: Optional[Path], markdown: Optional[Path], junit: Optional[Path],
           samples: Optional[Path] = None, html: Optional[Path] = None) -> None:
    """Write outputs, print, and exit 1 when a gate failed."""
    if samples is not None:  # before the report, so a report never names a samples file that is not there
        from .evaluate.samples import recorded_name, write_samples

        result.samples_file = recorded_name(samples, report)
        write_samples(result, samples)
    paired = result.extra.get("paired")
    if paired:
        out.note(f"paired with the baseline: {paired['robust']['regressed']} samples regressed, {paired['robust']['improved']} "
                 f"improved (exact McNemar p = {paired['robust']['mcnemar_p']:.4g})")
    for note in write_outputs(result, report, markdown, junit, html):
        out.note(note)
    if out.as_json:
        out.json(result.to_json())
    out.table(result.rich_table())
    for check in result.failed_checks:
        accepted = " (accepted)" if check.name in result.accepted_checks else ""
        out.warn(f"check {check.name} failed{accepted}: {check.detail}")
    failed = result.failed_gates
    for gate in failed:
        out.err.print(describe_failure(result, gate), markup=False, soft_wrap=True)  # one line each, for CI logs and greps
    if failed:
        raise typer.Exit(EXIT_GATE_FAILED)


@contextmanager
def training_progress(out: Output) -> Iterator:
    """Progress for ``harden``: one bar per epoch that stays, showing loss then held-out accuracy.

    The callback is ``(stage, done, total, metrics=None)``; evaluation stages (no metrics) get
    transient bars. Without a terminal (or with --quiet/--json) it prints one line per epoch instead.
    """
    from .harden import describe_epoch, percent

    def metrics_text(metrics: dict) -> str:
        """Compact, for the bar: loss while the epoch runs, then clean/robust accuracy."""
        if "holdout_robust_accuracy" not in metrics:
            return f"loss {metrics['loss']:.4f}"
        text = (f"loss {metrics['loss']:.3f} · held-out clean {percent(metrics['holdout_clean_accuracy'], 0)} "
                f"robust {percent(metrics['holdout_robust_accuracy'], 0)}")
        if metrics.get("input_holdout_clean_accuracy") is not None:  # the input model's, measured before epoch 1
            text += (f" (input {percent(metrics['input_holdout_clean_accuracy'], 0)} / "
                     f"{percent(metrics['input_holdout_robust_accuracy'], 0)})")
        return text + (" COLLAPSED" if metrics.get("collapsed") else "")

    if out.quiet or out.as_json or not out.err.is_terminal and not _force_progress():
        def lines(stage: str, done: int, total: int, metrics: dict | None = None) -> None:
            if metrics and "holdout_robust_accuracy" in metrics:
                out.note(f"{stage}: {describe_epoch(metrics)}")
        yield lines
        return
    bars = Progress(TextColumn("{task.description}"), BarColumn(bar_width=10), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("{task.fields[metrics]}"), console=out.err)
    tasks: dict[str, int] = {}

    def update(stage: str, done: int, total: int, metrics: dict | None = None) -> None:
        if stage not in tasks:
            tasks[stage] = bars.add_task(stage, total=total, metrics="")
        bars.update(tasks[stage], completed=done, **({"metrics": metrics_text(metrics)} if metrics else {}))
        if not stage.startswith("epoch") and done >= total:
            bars.remove_task(tasks.pop(stage))

    with bars:
        yield update


def harden_outputs(result, out: Output) -> None:
    """Print the before/after table (or the JSON report) and any failed sanity checks."""
    report = result.report
    if out.as_json:
        out.json(report.to_json())
    out.table(report.rich_table())
    for label, evaluation in report.columns():
        for check in evaluation.failed_checks:
            out.warn(f"{label}: check {check.name} failed: {check.detail}")
    for note in report.notes:
        out.note(note)
    out.note(f"profile {report.profile}" + (f": {'; '.join(report.decisions)}" if report.decisions else ""))
    out.note(report.headline())
    out.note(f"saved the {report.selected} epoch ({report.selected_epoch} of {report.last_epoch}) to {result.model_path}; "
             f"report in {result.out_dir}/report.md")


@app.command("harden")
def harden_command(
    checkpoint: Checkpoint,
    data: Annotated[str, typer.Option(help="Training data: .npz, an ImageFolder dir, a CIFAR batch dir, or 'digits-train'")],
    out_dir: Annotated[Path, typer.Option("--out", help="Output directory: model.safetensors, recipe.yaml, report.json/.md, train_log.jsonl, checkpoints/")],
    recipe: Annotated[str, typer.Option(help="Recipe name (mart, pgd-at, trades, standard) or a recipe YAML path; see `hardenctl recipes`")] = "mart",
    profile: Annotated[Optional[str], typer.Option(help="finetune (default: adversarially fine-tune the input model: short, lr and eps warm-up) or paper (the paper's from-scratch schedule, as published); `hardenctl recipes NAME` shows both")] = None,
    reinit: Annotated[bool, typer.Option("--reinit", help="Start from random weights (timm's init from --seed), as the papers do; with --profile paper")] = False,
    eval_data: Annotated[Optional[str], typer.Option(help="Data for the before/after report (default: the held-out split of --data)")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Training epochs (the recipe's `epochs`)")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Global training batch size (the recipe's `batch_size`)")] = None,
    lr: Annotated[Optional[str], typer.Option(help="Peak learning rate (the recipe's `lr`)")] = None,
    set_values: Annotated[Optional[list[str]], typer.Option("--set", help="Override a recipe parameter, key=value (repeatable), e.g. --set beta=5")] = None,
    seed: Annotated[int, typer.Option(help="Random seed (a run repeats exactly on CPU)")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N (under torchrun: one GPU per process)")] = "auto",
    resume: Annotated[bool, typer.Option(help="Continue a killed run in --out from its last complete epoch")] = False,
    eval_n: Annotated[int, typer.Option(help="Evaluate input and hardened models on the first n samples")] = 1000,
    suite: Annotated[str, typer.Option(help="Attack suite of the before/after report: quick, standard, autoattack")] = "standard",
    eps: Annotated[str, typer.Option(help="L∞ radius of the before/after report; fractions like 8/255 are fine")] = "8/255",
    amp: Annotated[str, typer.Option(help="Mixed precision on CUDA: auto (bf16 on CUDA, off on CPU), off, bf16, fp16")] = "auto",
    channels_last: Annotated[bool, typer.Option(help="Train in channels_last memory format (faster convolutions)")] = False,
    arch: ArchOption = None,
    num_classes: NumClassesOption = None,
    mean: MeanOption = None,
    std: StdOption = None,
    input_size: InputSizeOption = None,
    resize: ResizeOption = False,
    crop_pct: CropPctOption = None,
    interpolation: InterpolationOption = None,
    crop_mode: CropModeOption = None,
    workers: WorkersOption = None,
    skip_unreadable: SkipUnreadableOption = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON report on stdout")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress or table")] = False,
) -> None:
    """Adversarially fine-tune a checkpoint with a recipe (MART, PGD-AT, TRADES) and report before vs after.

    Several GPUs or nodes: torchrun --nproc_per_node=N -m hardenctl harden ... (the batch size is global).
    """
    import os

    main_process = os.environ.get("RANK", "0") == "0"  # under torchrun only rank 0 prints
    out = Output(quiet or not main_process, as_json and main_process)
    for value, option in ((epochs, "--epochs"), (batch_size, "--batch-size"), (eval_n, "--eval-n")):
        if value is not None and value < 1:
            raise UserError(f"{option} must be at least 1, got {value}", f"pass a positive {option}")
    loading = model_options(arch, num_classes, mean, std, input_size, resize, crop_pct, interpolation, crop_mode)
    reading = data_options(workers, skip_unreadable)
    _require_model(checkpoint)
    overrides = list(set_values or [])
    for value, key in ((profile, "profile"), (True if reinit else None, "reinit")):
        if value is None:
            continue
        if any(item.partition("=")[0].strip() == key for item in overrides):
            raise UserError(f"--{key} and --set {key}=... both given", "give it once")
        overrides.append(f"{key}={str(value).lower() if isinstance(value, bool) else value}")
    with training_progress(out) as progress:
        result = _api().harden(
            checkpoint, data=data, out=out_dir, recipe=recipe, eval_data=eval_data, overrides=overrides,
            epochs=epochs, batch_size=batch_size, lr=parse_number(lr, "--lr") if lr is not None else None, seed=seed,
            device=device, resume=resume, eval_n=eval_n, suite=suite, eps=parse_eps(eps, "linf"), amp=amp,
            channels_last=channels_last, progress=progress, log=out.note, **loading, **reading)
    if result is not None:
        harden_outputs(result, out)


@app.command("recipes")
def recipes_command(
    name: Annotated[Optional[str], typer.Argument(help="A recipe name or YAML path: print every parameter")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout")] = False,
) -> None:
    """List the training recipes, or every parameter of one with its default and meaning."""
    from rich.table import Table

    from .recipes import describe_profiles, read_recipe_values, recipe_card, recipe_names, recipe_path

    out = Output(False, as_json)
    if name is None:  # read from the YAML files and the recipe sources: no torch import, so it answers at once
        cards = {n: recipe_card(read_recipe_values(recipe_path(n))[0]) for n in recipe_names()}
        if as_json:
            out.json(json.dumps([{"name": n, "class": c["class"], "paper": c["paper"], "improves": c["improves"]}
                                 for n, c in cards.items()], indent=2) + "\n")
        table = Table(title="hardenctl recipes (recipes/*.yaml)")
        for column in ("recipe", "paper", "improves"):
            table.add_column(column)
        for recipe_name, card in cards.items():
            table.add_row(recipe_name, card["paper"], card["improves"])
        out.table(table)
        return
    from rich.markup import escape

    described = describe_profiles(name)
    cls, profiles = described.cls, described.profiles
    if as_json:
        out.json(json.dumps({"name": cls.name, "paper": cls.paper, "improves": cls.improves, "interpretation": cls.interpretation,
                             "default_profile": described.default, "profiles": {p: described.profile_notes[p] for p in profiles},
                             "parameters": [{"key": p.key, "default": p.value, "meaning": p.meaning, "values": p.values,
                                             "meanings": p.meanings} for p in described.parameters]},
                            indent=2) + "\n")
    several = len(profiles) > 1
    caption = (f"improves {cls.improves}; --profile {' | '.join(profiles)} (default {described.default}); override with --set key=value"
               if several else f"improves {cls.improves}; one profile ({described.default}); override with --set key=value")
    table = Table(title=f"{cls.name}: {cls.paper}", caption=caption)
    table.add_column("parameter")
    for profile_name in profiles:
        table.add_column(profile_name + (" (default)" if several and profile_name == described.default else ""))
    table.add_column("meaning")
    for p in described.parameters:
        meaning = p.meaning
        if several and len(set(p.meanings.values())) > 1:  # the profiles comment the key apart: show each
            meaning = " · ".join(f"{profile_name}: {p.meanings[profile_name]}" for profile_name in profiles if profile_name in p.meanings)
        table.add_row(p.key, *(escape(_value_text(p.values[profile_name])) for profile_name in profiles), escape(meaning))
    out.table(table)
    if several and not as_json:
        for profile_name in profiles:
            out.out.print(f"{profile_name}: {described.profile_notes[profile_name]}", markup=False)


def _value_text(value) -> str:
    """A parameter value as the YAML file writes it: lists in brackets without quotes."""
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value_text(v) for v in value) + "]"
    return str(value).lower() if isinstance(value, bool) else str(value)


@app.command("info")
def info_command(
    checkpoint: Checkpoint,
    arch: ArchOption = None,
    num_classes: NumClassesOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout")] = False,
) -> None:
    """Show a checkpoint's architecture, input, normalisation, inserted modules (e.g. FSR) and parameter counts."""
    from .models.info import describe_lines, describe_model

    description = describe_model(checkpoint, arch=arch, num_classes=num_classes)
    out = Output(False, as_json)
    if as_json:
        out.json(json.dumps(description, indent=2, default=str) + "\n")
        return
    for line in describe_lines(description):
        out.out.print(line, markup=False)


@app.command("demo")
def demo_command(
    out_dir: Annotated[Path, typer.Option("--out", help="Where the demo writes its models and reports")] = Path("hardenctl-demo"),
    n: Annotated[int, typer.Option(help="Test samples to evaluate")] = 200,
    seed: Annotated[int, typer.Option(help="Random seed")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON before/after report on stdout")] = False,
) -> None:
    """Train a small timm model on real handwritten digits, harden it with MART, report before vs after (no files needed)."""
    from .demo import DEMO_EPS, DEMO_MART, harden_demo_model, make_demo_model

    out = Output(quiet, as_json)
    out.note(f"[bold]1/2[/bold] training timm test_resnet on scikit-learn digits (1438 real 8x8 images) → {out_dir}/input/model.safetensors")
    path = make_demo_model(out_dir / "input", seed=seed, on_epoch=lambda e, loss: out.note(f"  epoch {e + 1}: loss {loss:.3f}"))
    out.note(f"[bold]2/2[/bold] hardening it with MART for {DEMO_MART['epochs']} epochs → {out_dir}/model.safetensors, then evaluating "
             f"both on the 359 held-out digits: standard suite, L∞ ε = {DEMO_EPS} (8/255 is below one grey level of these "
             f"8x8 digits, so the demo uses {DEMO_EPS}), n = {n}")
    with training_progress(out) as progress:
        result = harden_demo_model(path, out_dir, seed=seed, n=n, progress=progress, log=out.note)
    harden_outputs(result, out)
    out.note(f"next: hardenctl eval {result.model_path} --data digits-test --eps {DEMO_EPS} --suite quick --min-robust-acc 0.5")


def _rank_label() -> str:
    """`` (rank 1 of 2)`` under torchrun, where every process prints its own errors; empty otherwise."""
    import os

    world = os.environ.get("WORLD_SIZE", "1")
    return f" (rank {os.environ.get('RANK', '0')} of {world})" if world not in ("", "1") else ""


def main(argv: list[str] | None = None) -> int:
    """Console entry point: one-line errors and exit code 2 for bad input, never a traceback."""
    command = typer.main.get_command(app)
    err = Console(stderr=True, highlight=False)
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--"]:  # `torchrun -m hardenctl -- eval --n 100`: the `--` keeps torchrun from reading --n as its own
        argv = argv[1:]
    try:
        code = command.main(args=argv, prog_name="hardenctl", standalone_mode=False)
        return int(code or 0) if isinstance(code, int) else EXIT_OK
    except UserError as exc:
        err.print(f"error{_rank_label()}: {exc}", markup=False, soft_wrap=True)
        return EXIT_USAGE
    except typer.Exit as exc:
        return exc.exit_code
    except cli_errors.NoArgsIsHelpError as exc:
        err.print(exc.format_message(), markup=False)
        return EXIT_USAGE
    except cli_errors.ClickException as exc:
        err.print(f"error: {exc.format_message()}", markup=False, soft_wrap=True)
        return EXIT_USAGE
    except (KeyboardInterrupt, getattr(cli_errors, "Abort", KeyboardInterrupt)):
        err.print("aborted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
