"""``hardenctl`` command line: parse, call the API, print through one output sink.

Exit codes: 0 success and every gate passed · 1 a gate failed · 2 bad input or usage.
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

from . import api
from .errors import EXIT_GATE_FAILED, EXIT_OK, EXIT_USAGE, UserError
from .gates import apply_gates, describe_failure
from .report import Report, load_report, write_outputs

try:  # typer >= 0.20 carries its own copy of click
    from typer._click import exceptions as cli_errors
except ImportError:  # pragma: no cover - older typer on top of click
    from click import exceptions as cli_errors

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
                  help="Make timm image classifiers robust to adversarial attacks, and measure it honestly.")


class Output:
    """The one output sink: tables to stdout for people, JSON to stdout for machines, notes to stderr."""

    def __init__(self, quiet: bool = False, as_json: bool = False):
        self.quiet, self.as_json = quiet, as_json
        self.out = Console(highlight=False)
        self.err = Console(stderr=True, highlight=False)

    def note(self, message: str) -> None:
        if not self.quiet:
            self.err.print(message)

    def warn(self, message: str) -> None:
        if not self.as_json or not self.quiet:
            self.err.print(f"[yellow]warning:[/yellow] {message}")

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
Checkpoint = Annotated[Path, typer.Argument(help="Model: .safetensors, timm train.py .pth/.pth.tar, or a state_dict .pt")]
# Model-loading options shared by every command that reads a checkpoint.
ArchOption = Annotated[Optional[str], typer.Option(help="timm architecture, when the checkpoint does not say")]
NumClassesOption = Annotated[Optional[int], typer.Option(help="Number of classes, when the checkpoint does not say")]
MeanOption = Annotated[Optional[str], typer.Option(help="Normalisation mean r,g,b (when the checkpoint has none)")]
StdOption = Annotated[Optional[str], typer.Option(help="Normalisation std r,g,b")]
InputSizeOption = Annotated[Optional[str], typer.Option(help="Declared input size H,W (passed to timm as img_size where needed)")]
ResizeOption = Annotated[bool, typer.Option(help="Resize the data to the declared input size")]


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
    baseline: Annotated[Optional[Path], typer.Option(help="Gate: compare with an earlier report.json")] = None,
    max_drop: Annotated[Optional[float], typer.Option(help="Gate: largest allowed drop from --baseline (default 0)")] = None,
    strict: Annotated[bool, typer.Option(help="Fail the gate when any sanity check fails")] = False,
    protected: Annotated[Optional[str], typer.Option(help="Protected classes, ids or class names, e.g. 3,5: adds their clean/robust accuracy and the cost-weighted robust error")] = None,
    protected_cost: Annotated[float, typer.Option(help="Cost of misclassifying a protected class (others cost 1)")] = 10.0,
    min_protected_robust_acc: Annotated[Optional[float], typer.Option(help="Gate: fail (exit 1) below this robust accuracy on protected classes (needs --protected)")] = None,
    fixed_mask: Annotated[bool, typer.Option(help="AToP composite: one noise and mask from --seed for every image (deterministic, for debugging; not the deployed defence)")] = False,
) -> None:
    """Measure clean and robust accuracy of a checkpoint and gate on it."""
    out = Output(quiet, as_json)
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
    for value, option in ((n, "--n"), (batch_size, "--batch-size"), (eot_samples, "--eot-samples"), (apgd_steps, "--apgd-steps"), (square_queries, "--square-queries")):
        if value < 1:
            raise UserError(f"{option} must be at least 1, got {value}", f"pass a positive {option}")
    attack_names = [a.strip() for a in attacks.split(",") if a.strip()] if attacks is not None else None
    config = dict(eps=eps_value, norm=norm, suite=suite, attacks=attack_names, n=n, batch_size=batch_size, seed=seed,
                  eot_samples=eot_samples, eps_sweep=sweep, apgd_steps=apgd_steps, square_queries=square_queries,
                  randomized=True if randomized else None)
    api.EvalConfig(**config).build_attacks(eps_value, 1)  # validate suite/attack names before any loading
    baseline_report = load_report(baseline) if baseline else None

    model = api.load_model(checkpoint, arch=arch, num_classes=num_classes, mean=parse_list(mean, "--mean"),
                           std=parse_list(std, "--std"), input_size=parse_size(input_size), device=device)
    if fixed_mask:
        if not hasattr(model, "set_fixed_mask"):
            raise UserError("--fixed-mask applies only to a model with a random transform (an AToP composite)", "drop --fixed-mask")
        model.set_fixed_mask(seed)
    dataset = api.load_data(data, model, n=n, resize=resize)
    if protected_items is not None:
        from .protected import resolve_protected

        config.update(protected=resolve_protected(protected_items, dataset.class_names), protected_cost=protected_cost)
    with out.progress() as progress:
        result = api.evaluate(model, dataset, progress=progress, **config)
    apply_gates(result, min_clean_acc, min_robust_acc, baseline_report, max_drop, strict, min_protected_robust_acc)
    finish(result, out, report, markdown, junit)


def finish(result: Report, out: Output, report: Optional[Path], markdown: Optional[Path], junit: Optional[Path]) -> None:
    """Write outputs, print, and exit 1 when a gate failed."""
    for note in write_outputs(result, report, markdown, junit):
        out.note(note)
    if out.as_json:
        out.json(result.to_json())
    out.table(result.rich_table())
    for check in result.failed_checks:
        out.warn(f"check {check.name} failed: {check.detail}")
    failed = result.failed_gates
    for gate in failed:
        out.err.print(describe_failure(gate))
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
        return (f"loss {metrics['loss']:.3f} · held-out clean {percent(metrics['holdout_clean_accuracy'], 0)} "
                f"robust {percent(metrics['holdout_robust_accuracy'], 0)}")

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
    out.note(report.headline())
    out.note(f"saved the {report.selected} epoch ({report.selected_epoch} of {report.last_epoch}) to {result.model_path}; "
             f"report in {result.out_dir}/report.md")


@app.command("harden")
def harden_command(
    checkpoint: Checkpoint,
    data: Annotated[str, typer.Option(help="Training data: .npz, an ImageFolder dir, a CIFAR batch dir, or 'digits-train'")],
    out_dir: Annotated[Path, typer.Option("--out", help="Output directory: model.safetensors, recipe.yaml, report.json/.md, train_log.jsonl, checkpoints/")],
    recipe: Annotated[str, typer.Option(help="Recipe name (mart, pgd-at, trades, standard) or a recipe YAML path; see `hardenctl recipes`")] = "mart",
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
    with training_progress(out) as progress:
        result = api.harden(
            checkpoint, data=data, out=out_dir, recipe=recipe, eval_data=eval_data, overrides=set_values or [],
            epochs=epochs, batch_size=batch_size, lr=parse_number(lr, "--lr") if lr is not None else None, seed=seed,
            device=device, resume=resume, eval_n=eval_n, suite=suite, eps=parse_eps(eps, "linf"), amp=amp,
            channels_last=channels_last, arch=arch, num_classes=num_classes, mean=parse_list(mean, "--mean"),
            std=parse_list(std, "--std"), input_size=parse_size(input_size), resize=resize, progress=progress, log=out.note)
    if result is not None:
        harden_outputs(result, out)


@app.command("recipes")
def recipes_command(
    name: Annotated[Optional[str], typer.Argument(help="A recipe name or YAML path: print every parameter")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout")] = False,
) -> None:
    """List the training recipes, or every parameter of one with its default and meaning."""
    from rich.table import Table

    from .recipes import describe, load_recipe, recipe_names

    out = Output(False, as_json)
    if name is None:
        rows = [load_recipe(n) for n in recipe_names()]
        if as_json:
            out.json(json.dumps([{"name": n, "class": r.name, "paper": r.paper, "improves": r.improves}
                                 for n, r in zip(recipe_names(), rows)], indent=2) + "\n")
        table = Table(title="hardenctl recipes (recipes/*.yaml)")
        for column in ("recipe", "paper", "improves"):
            table.add_column(column)
        for recipe_name, recipe in zip(recipe_names(), rows):
            table.add_row(recipe_name, recipe.paper, recipe.improves)
        out.table(table)
        return
    cls, parameters = describe(name)
    if as_json:
        out.json(json.dumps({"name": cls.name, "paper": cls.paper, "improves": cls.improves, "interpretation": cls.interpretation,
                             "parameters": [{"key": p.key, "default": p.value, "meaning": p.meaning} for p in parameters]},
                            indent=2) + "\n")
    table = Table(title=f"{cls.name}: {cls.paper}", caption=f"improves {cls.improves}; override with --set key=value")
    for column in ("parameter", "default", "meaning"):
        table.add_column(column)
    for p in parameters:
        table.add_row(p.key, str(p.value), p.meaning)
    out.table(table)


@app.command("info")
def info_command(
    checkpoint: Checkpoint,
    arch: ArchOption = None,
    num_classes: NumClassesOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout")] = False,
) -> None:
    """Show a checkpoint's architecture, input, normalisation, inserted modules (e.g. FSR) and parameter counts."""
    from .fsr_module import describe_lines, describe_model

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


def main(argv: list[str] | None = None) -> int:
    """Console entry point: one-line errors and exit code 2 for bad input, never a traceback."""
    command = typer.main.get_command(app)
    err = Console(stderr=True, highlight=False)
    try:
        code = command.main(args=argv, prog_name="hardenctl", standalone_mode=False)
        return int(code or 0) if isinstance(code, int) else EXIT_OK
    except UserError as exc:
        err.print(f"error: {exc}", markup=False, soft_wrap=True)
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
