"""``hardenctl harden`` and ``hardenctl demo``: train with one progress bar per epoch, print before vs after."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Iterator, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..errors import UserError
from .app import app
from .options import (
    ArchOption,
    Checkpoint,
    CropModeOption,
    CropPctOption,
    InputSizeOption,
    InterpolationOption,
    MeanOption,
    NumClassesOption,
    ResizeOption,
    SkipUnreadableOption,
    StdOption,
    WorkersOption,
    api_module,
    model_options,
    parse_eps,
    parse_number,
    require_model,
    word,
)
from .output import Output


@contextmanager
def training_progress(out: Output) -> Iterator:
    """Progress for ``harden``: one bar per epoch that stays, showing loss then held-out accuracy.

    The callback is ``(stage, done, total, metrics=None)``; evaluation stages get transient bars. Without a terminal
    (or with --json) it prints plain lines instead (:class:`~hardenctl.cli.progress.LogProgress`); --quiet prints none.
    """
    from ..api import describe_epoch, percent

    def metrics_text(metrics: dict) -> str:
        """Compact, for the bar: loss while the epoch runs, then clean/robust accuracy."""
        if "loss" not in metrics:  # an evaluation's attack boundary
            return str(metrics.get("detail", ""))
        if "holdout_robust_accuracy" not in metrics:
            return f"loss {metrics['loss']:.4f}"
        text = (
            f"loss {metrics['loss']:.3f} · held-out clean {percent(metrics['holdout_clean_accuracy'], 0)} "
            f"robust {percent(metrics['holdout_robust_accuracy'], 0)}"
        )
        if metrics.get("input_holdout_clean_accuracy") is not None:  # the input model's, measured before epoch 1
            text += (
                f" (input {percent(metrics['input_holdout_clean_accuracy'], 0)} / "
                f"{percent(metrics['input_holdout_robust_accuracy'], 0)})"
            )
        return text + (" COLLAPSED" if metrics.get("collapsed") else "")

    if out.quiet:
        yield None
        return
    if out.as_json or out.log_lines():  # a log: plain lines, at least every 30 s, an epoch's numbers when it ends
        with out.log_progress(
            describe=lambda m: describe_epoch(m) if "holdout_robust_accuracy" in m else None
        ) as lines:
            yield lines
        return
    bars = Progress(
        TextColumn("{task.description}"),
        BarColumn(bar_width=10),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[metrics]}"),
        console=out.err,
    )
    tasks: dict[str, int] = {}

    def update(stage: str, done: int, total: int, metrics: dict | None = None) -> None:
        if stage not in tasks:
            tasks[stage] = bars.add_task(stage, total=total, metrics="")
        bars.update(tasks[stage], completed=done, **({"metrics": metrics_text(metrics)} if metrics else {}))
        if not stage.startswith("epoch") and done >= total:
            bars.remove_task(tasks.pop(stage))

    with bars:
        yield update


class NoteLog:
    """``log`` for the engine: prints each note once and remembers it, so the closing summary does not repeat what the
    run already said (the lr auto decision is printed when it is made)."""

    def __init__(self, out: Output):
        self.out, self.printed = out, set()

    def __call__(self, message: str) -> None:
        self.printed.add(message)
        self.out.note(message)


def harden_outputs(result, out: Output, printed: set[str] = frozenset()) -> None:
    """Print the before/after table (or the JSON report), any failed sanity checks, and the decisions not yet
    printed."""
    report = result.report
    if out.as_json:
        out.json(report.to_json())
    out.table(report.rich_table())
    for label, evaluation in report.columns():
        for check in evaluation.failed_checks:
            out.warn(f"{label}: check {check.name} failed: {check.detail}")
    for note in report.notes:
        out.note(note)
    decisions = [d for d in report.decisions if d not in printed]
    out.note(f"profile {report.profile}" + (f": {'; '.join(decisions)}" if decisions else ""))
    for line in report.trade_lines():
        out.note(line)
    out.note(
        f"saved the {report.selected} epoch ({report.selected_epoch} of {report.last_epoch}) to {result.model_path}; "
        f"report in {result.out_dir}/report.md"
    )


def parse_lr(text: Optional[str]) -> float | str | None:
    """``--lr``: a number or ``auto`` (measured on the held-out split: hardenctl.training.lr_sweep)."""
    if text is None:
        return None
    word = text.strip().lower()
    if word == "auto":
        return word
    try:
        return parse_number(text, "--lr")
    except UserError:  # the generic hint (8/255) is an eps; an lr's choices are a number or auto
        raise UserError(
            f"--lr: {text!r} is neither a number nor auto", "pass e.g. --lr 0.01, or --lr auto to measure it"
        ) from None


@app.command("harden")
def harden_command(
    checkpoint: Checkpoint,
    data: Annotated[
        str, typer.Option(help="Training data: .npz, an ImageFolder dir, a CIFAR batch dir, or 'digits-train'")
    ],
    out_dir: Annotated[
        Path,
        typer.Option(
            "--out",
            help="Output directory: model.safetensors, recipe.yaml, report.json/.md, train_log.jsonl, checkpoints/",
        ),
    ],
    recipe: Annotated[
        str,
        typer.Option(
            help="Recipe name (mart, pgd-at, trades, standard) or a recipe YAML path; see `hardenctl recipes`"
        ),
    ] = "mart",
    profile: Annotated[
        Optional[str],
        typer.Option(
            help=(
                "finetune (default: adversarially fine-tune the input model: short, lr and eps warm-up) or paper (the "
                "paper's from-scratch schedule, as published); `hardenctl recipes NAME` shows both"
            )
        ),
    ] = None,
    reinit: Annotated[
        bool,
        typer.Option(
            "--reinit",
            help="Start from random weights (timm's init from --seed), as the papers do; with --profile paper",
        ),
    ] = False,
    eval_data: Annotated[
        Optional[str], typer.Option(help="Data for the before/after report (default: the held-out split of --data)")
    ] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Training epochs (the recipe's `epochs`)")] = None,
    batch_size: Annotated[
        Optional[int], typer.Option(help="Global training batch size (the recipe's `batch_size`)")
    ] = None,
    lr: Annotated[
        Optional[str],
        typer.Option(
            help=(
                "Peak learning rate (the recipe's `lr`): a number, or auto: measure lr_sweep × the linear-scaling lr "
                "(base_lr × batch / 256) for a few steps each on the held-out split and keep the best, within "
                "lr_sweep_budget "
                "of the run's work (the linear-scaling lr when the run is too short)"
            )
        ),
    ] = None,
    set_values: Annotated[
        Optional[list[str]],
        typer.Option("--set", help="Override a recipe parameter, key=value (repeatable), e.g. --set beta=5"),
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed (a run repeats exactly on CPU)")] = 0,
    device: Annotated[
        str, typer.Option(help="auto, cpu, cuda or cuda:N (under torchrun: one GPU per process)")
    ] = "auto",
    resume: Annotated[bool, typer.Option(help="Continue a killed run in --out from its last complete epoch")] = False,
    overwrite: Annotated[
        bool,
        typer.Option(
            help=(
                "Write into a non-empty --out: replace an earlier run there, or add to a folder holding other files "
                "(hardenctl's files of the same names are replaced)"
            )
        ),
    ] = False,
    eval_n: Annotated[int, typer.Option(help="Evaluate input and hardened models on the first n samples")] = 1000,
    suite: Annotated[
        str, typer.Option(help="Attack suite of the before/after report: quick, standard, autoattack")
    ] = "standard",
    eps: Annotated[
        str, typer.Option(help="L∞ radius of the before/after report; fractions like 8/255 are fine")
    ] = "8/255",
    amp: Annotated[
        str, typer.Option(help="Mixed precision on CUDA: auto (bf16 on CUDA, off on CPU), off, bf16, fp16")
    ] = "auto",
    channels_last: Annotated[
        bool, typer.Option(help="Train in channels_last memory format (faster convolutions)")
    ] = False,
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
    from .. import DataOptions, HardenOptions

    options = HardenOptions(
        out_dir=out_dir,
        recipe=recipe,
        overrides=tuple(set_values or ()),
        epochs=epochs,
        batch_size=batch_size,
        lr=parse_lr(lr),
        profile=profile,
        reinit=reinit,
        seed=seed,
        device=device,
        amp=amp,
        channels_last=channels_last,
        resume=resume,
        overwrite=overwrite,
        eval_data=eval_data,
        eval_n=eval_n,
        eval_options={"suite": word(suite), "eps": parse_eps(eps, "linf")},
        reading=DataOptions(workers, skip_unreadable),
    )
    loading = model_options(arch, num_classes, mean, std, input_size, resize, crop_pct, interpolation, crop_mode)
    require_model(checkpoint)  # a mistyped path answers before torch is imported
    with training_progress(out) as progress:  # api.harden checks --out before it loads anything
        result = api_module().harden(
            checkpoint, data, options, loading=loading, progress=progress, log=(log := NoteLog(out))
        )
    if result is not None:
        harden_outputs(result, out, log.printed)


@app.command("demo")
def demo_command(
    out_dir: Annotated[Path, typer.Option("--out", help="Where the demo writes its models and reports")] = Path(
        "hardenctl-demo"
    ),
    n: Annotated[int, typer.Option("--n", "-n", "--num-samples", help="Test samples to evaluate")] = 200,
    seed: Annotated[int, typer.Option(help="Random seed")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON before/after report on stdout")] = False,
) -> None:
    """Train a small timm model on real handwritten digits, harden it with MART, report before vs after (no files
    needed)."""
    from .. import DEMO_EPS, DEMO_MART, harden_demo_model, make_demo_model
    from ..api import check_output_dir

    check_output_dir(out_dir, "--out")  # before the first model is trained, not after
    out = Output(quiet, as_json)
    out.note(
        "1/2 training timm test_resnet on scikit-learn digits (1,438 real 8x8 images) → "
        f"{out_dir}/input/model.safetensors"
    )
    path = make_demo_model(
        out_dir / "input", seed=seed, on_epoch=lambda e, loss: out.note(f"  epoch {e + 1}: loss {loss:.3f}")
    )
    out.note(
        f"2/2 hardening it with MART for {DEMO_MART['epochs']} epochs (lr {DEMO_MART['lr']}) → {out_dir}/hardened/, "
        f"then attacking both models on the first {min(n, 359)} of the 359 test digits (digits-test) with the standard "
        "suite (APGD-CE, "
        f"APGD-T, Square) at L∞ ε = {DEMO_EPS} (8/255 is below one grey level of these 8x8 digits). That suite is "
        "stronger than the PGD monitor of the epoch lines, on other images: expect lower robust accuracy in the final "
        "table"
    )
    with training_progress(out) as progress:
        result = harden_demo_model(
            path, out_dir / "hardened", seed=seed, n=n, progress=progress, log=(log := NoteLog(out))
        )
    harden_outputs(result, out, log.printed)
    out.note(
        f"next: hardenctl eval {result.model_path} --data digits-test --eps {DEMO_EPS} --suite quick --min-robust-acc "
        "0.5"
    )
