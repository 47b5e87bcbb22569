"""``hardenctl eval``: measure clean and robust accuracy, write the reports, gate on them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import EXIT_GATE_FAILED, UserError
from ..gates import describe_failure
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
    check_outputs,
    model_options,
    parse_eps,
    require_model,
    word,
)
from .output import Output


@app.command("eval")
def eval_command(
    checkpoint: Checkpoint,
    data: Annotated[
        str,
        typer.Option(help="Data: .npz (uint8 x N×H×W×C, int y), an ImageFolder dir, a CIFAR batch dir, or 'digits'"),
    ],
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
    n: Annotated[
        int,
        typer.Option(
            "--n",
            "-n",
            "--num-samples",
            help="Evaluate the first n samples (under torchrun spell it -n or --num-samples: torchrun reads --n as its own --nnodes)",
        ),
    ] = 1000,
    batch_size: Annotated[
        str,
        typer.Option(
            help="Batch size, or auto: the largest whose attack passes fit in memory (the fastest; the report records the choice)"
        ),
    ] = "128",
    eval_precision: Annotated[
        str,
        typer.Option(
            help="Precision of the attacks' search: auto (bf16 on a CUDA GPU, else fp32), fp32, bf16; every verdict is re-scored in fp32"
        ),
    ] = "auto",
    eps: Annotated[
        str, typer.Option(help="Perturbation radius in [0,1] pixel units; fractions like 8/255 are fine")
    ] = "8/255",
    norm: Annotated[str, typer.Option(help="Threat model: linf or l2")] = "linf",
    suite: Annotated[
        str,
        typer.Option(
            help="quick (PGD-20 + APGD-CE), standard (APGD-CE → APGD-T → Square), autoattack (reference package)"
        ),
    ] = "standard",
    attacks: Annotated[
        Optional[str], typer.Option(help="Custom attack list instead of a suite: fgsm,pgd,apgd-ce,apgd-t,square")
    ] = None,
    eot_samples: Annotated[
        int, typer.Option(help="EOT draws per gradient and per re-scoring, for randomised models")
    ] = 20,
    randomized: Annotated[bool, typer.Option(help="Treat the model as randomised (EOT) even if not detected")] = False,
    eps_sweep: Annotated[
        Optional[str], typer.Option(help="Also evaluate at these radii, e.g. 0,2/255,4/255,8/255")
    ] = None,
    apgd_steps: Annotated[int, typer.Option(help="APGD iterations")] = 100,
    square_queries: Annotated[int, typer.Option(help="Square attack queries per point")] = 5000,
    seed: Annotated[int, typer.Option(help="Random seed (the report repeats exactly on CPU)")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N")] = "auto",
    report: Annotated[Optional[Path], typer.Option(help="Write the JSON report here")] = None,
    markdown: Annotated[Optional[Path], typer.Option(help="Write a Markdown report here")] = None,
    junit: Annotated[Optional[Path], typer.Option(help="Write checks and gates as JUnit XML here")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON report on stdout")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress or table")] = False,
    min_clean_acc: Annotated[
        Optional[float], typer.Option(help="Gate: fail (exit 1) below this clean accuracy")
    ] = None,
    min_robust_acc: Annotated[
        Optional[float], typer.Option(help="Gate: fail (exit 1) below this robust accuracy")
    ] = None,
    baseline: Annotated[
        Optional[Path],
        typer.Option(help="Gate: compare with an earlier report.json (same eps, norm, suite, n and data)"),
    ] = None,
    max_drop: Annotated[
        Optional[float], typer.Option(help="Gate: largest allowed drop from --baseline (default 0)")
    ] = None,
    baseline_samples: Annotated[
        Optional[Path],
        typer.Option(
            help="The --baseline's per-sample results (its --samples file) for a paired, per-sample comparison; default: the file the baseline report recorded, else BASELINE.samples.jsonl beside it"
        ),
    ] = None,
    gate_on: Annotated[
        str,
        typer.Option(
            help="--min-*-acc gates compare with the point estimate (point) or the 95% Wilson interval's lower bound (lower)"
        ),
    ] = "point",
    sequential: Annotated[
        bool,
        typer.Option(
            "--sequential",
            help="Attack the images in a seeded random order, one batch per process and round, and stop as soon as every gate is decided by an anytime-valid confidence sequence; the chance the early verdict differs from the full --n run's is at most --alpha",
        ),
    ] = False,
    alpha: Annotated[
        Optional[float],
        typer.Option(
            help="With --sequential: the chance, at most, that an early verdict differs from the full run's, over all gates (default 0.05)"
        ),
    ] = None,
    samples: Annotated[
        Optional[Path],
        typer.Option(help="Write per-sample results here (JSON lines, with a header naming this report)"),
    ] = None,
    strict: Annotated[
        bool,
        typer.Option(
            help="A failed sanity check fails the gate (default); --no-strict accepts every failure, recorded in the report"
        ),
    ] = True,
    allow_check: Annotated[
        Optional[list[str]],
        typer.Option(help="Accept this failed sanity check knowingly (repeatable); recorded in the report"),
    ] = None,
    protected: Annotated[
        Optional[str],
        typer.Option(
            help="Protected classes, ids or class names, e.g. 3,5: adds their clean/robust accuracy and the cost-weighted robust error"
        ),
    ] = None,
    protected_cost: Annotated[
        float, typer.Option(help="Cost of misclassifying a protected class (others cost 1)")
    ] = 10.0,
    min_protected_robust_acc: Annotated[
        Optional[float],
        typer.Option(help="Gate: fail (exit 1) below this robust accuracy on protected classes (needs --protected)"),
    ] = None,
    fixed_mask: Annotated[
        bool,
        typer.Option(
            help="AToP composite: one noise and mask from --seed for every image (deterministic, for debugging; not the deployed defence)"
        ),
    ] = False,
    html: Annotated[
        Optional[Path],
        typer.Option(help="Write a self-contained HTML report here (tables, pictures and the eps curve embedded)"),
    ] = None,
    pictures: Annotated[
        int,
        typer.Option(
            help="Adversarial examples drawn for the Markdown/HTML report, beside their clean images (0: none)"
        ),
    ] = 8,
    save_adversarial: Annotated[
        Optional[Path],
        typer.Option(
            help="Keep every sample's worst-case adversarial image in this directory (float32, lossless: one .npz per batch, named by sample index)"
        ),
    ] = None,
    resume_dir: Annotated[
        Optional[Path],
        typer.Option(
            help="Keep the evaluation's state in this directory, saved after every batch (one file per process)"
        ),
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue the killed evaluation whose state is in --resume-dir")] = False,
    robustbench_json: Annotated[
        Optional[Path],
        typer.Option(help="Also write a RobustBench-style model_info entry here (README: which fields are ours)"),
    ] = None,
    robustbench_dataset: Annotated[
        Optional[str],
        typer.Option(
            help="The entry's RobustBench dataset: cifar10, cifar100 or imagenet (default: recognised from the data's name, else left empty)"
        ),
    ] = None,
    additional_data: Annotated[
        Optional[bool],
        typer.Option(
            "--additional-data/--no-additional-data",
            help="The entry's additional_data: whether the model was (pre-)trained on data besides the evaluated set (default: true when the model declares such data)",
        ),
    ] = None,
) -> None:
    """Measure clean and robust accuracy of a checkpoint and gate on it.

    Several GPUs, CPU processes or nodes: torchrun --nproc_per_node=N -m hardenctl eval ... (batches are split
    over the processes; the report is the same as one process's, and only rank 0 writes it).
    """
    main_process = os.environ.get("RANK", "0") == "0"  # under torchrun only rank 0 prints and writes the report
    out = Output(quiet or not main_process, as_json and main_process)
    entry_options = robustbench_options(robustbench_json, robustbench_dataset, additional_data)
    outputs = {
        "--report": report,
        "--markdown": markdown,
        "--junit": junit,
        "--html": html,
        "--samples": samples,
        "--robustbench-json": robustbench_json,
    }
    check_outputs(outputs, {"--save-adversarial": save_adversarial, "--resume-dir": resume_dir})
    require_model(checkpoint)  # a mistyped path answers before torch is imported
    api = api_module()
    norm = word(norm)
    request = api.EvalRequest(
        model=checkpoint,
        data=data,
        config=api.EvalConfig(
            eps=parse_eps(eps, norm),
            norm=norm,
            suite=suite,
            attacks=parse_attack_list(attacks),
            n=n,
            batch_size=parse_batch_size(batch_size),
            seed=seed,
            eot_samples=eot_samples,
            eps_sweep=[parse_eps(part, norm, "--eps-sweep") for part in eps_sweep.split(",")] if eps_sweep else None,
            apgd_steps=apgd_steps,
            square_queries=square_queries,
            randomized=True if randomized else None,
            precision=eval_precision,
        ),
        run=api.EvalRun(resume_dir=resume_dir, resume=resume, save_adversarial=save_adversarial, pictures=pictures),
        gates=api.GateOptions(
            min_clean_acc=min_clean_acc,
            min_robust_acc=min_robust_acc,
            min_protected_robust_acc=min_protected_robust_acc,
            baseline=baseline,
            baseline_samples=baseline_samples,
            max_drop=max_drop,
            strict=strict,
            allow_check=tuple(word(name) for name in allow_check or ()),
            gate_on=word(gate_on),
        ),
        loading=model_options(
            arch, num_classes, mean, std, input_size, resize, crop_pct, interpolation, crop_mode, device
        ),
        reading=api.DataOptions(workers, skip_unreadable),
        protected=tuple(p.strip() for p in protected.split(",") if p.strip()) if protected is not None else None,
        protected_cost=protected_cost,
        sequential=sequential,
        alpha=alpha,
        fixed_mask=fixed_mask,
    )
    with out.progress() as progress:
        outcome = api.run_evaluation(request, progress, out.note)
    if not main_process:  # every process holds the whole report; rank 0 writes it, the others only share its exit code
        if outcome.gate_error is not None:
            raise outcome.gate_error
        if outcome.report.failed_gates:
            raise typer.Exit(EXIT_GATE_FAILED)
        return
    finish(
        outcome.report,
        out,
        report,
        markdown,
        junit,
        samples=samples,
        html=html,
        failure=outcome.gate_error,
        robustbench_json=robustbench_json,
        entry_options=entry_options,
    )


def robustbench_options(path: Optional[Path], dataset: Optional[str], additional: Optional[bool]) -> dict:
    """The RobustBench entry's settings, checked before any work (the flags need --robustbench-json)."""
    if path is None:
        if dataset is not None or additional is not None:
            raise UserError(
                "--robustbench-dataset and --additional-data describe the --robustbench-json entry",
                "pass --robustbench-json FILE too, or drop them",
            )
        return {}
    from ..report.robustbench import check_dataset_key

    return {"dataset": check_dataset_key(dataset) if dataset is not None else None, "additional": additional}


def parse_attack_list(text: str | None) -> list[str] | None:
    """``--attacks fgsm,pgd``: the names in order; a list naming nothing is an error, not the whole standard suite."""
    if text is None:
        return None
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    if not names:
        raise UserError(
            f"--attacks {text!r} names no attack", "pass e.g. --attacks apgd-ce,square, or leave it out for --suite"
        )
    return names


def parse_batch_size(text: str) -> int | str:
    """``--batch-size``: a positive whole number, or ``auto``."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = int(text)
    except ValueError:
        raise UserError(
            f"--batch-size must be a whole number or auto, got {text!r}",
            "pass e.g. --batch-size 128 or --batch-size auto",
        ) from None
    if value < 1:
        raise UserError(f"--batch-size must be at least 1, got {value}", "pass a positive --batch-size, or auto")
    return value


def finish(
    result,
    out: Output,
    report: Optional[Path],
    markdown: Optional[Path],
    junit: Optional[Path],
    samples: Optional[Path] = None,
    html: Optional[Path] = None,
    failure: Exception | None = None,
    robustbench_json: Optional[Path] = None,
    entry_options: dict | None = None,
) -> None:
    """Write outputs, print, and exit 1 when a gate failed; ``failure`` (an internal error met after the report was
    computed) is raised once every requested file is written.

    The verdict outranks the files: an output that fails after the evaluation (a full disk, a folder removed
    meanwhile) is named on one more line, and the exit code stays the verdict's. Only a bug of ours while writing,
    with every gate passed, ends in exit 3.
    """
    notes, unwritten = write_files(
        result, report, markdown, junit, html, samples, robustbench_json, entry_options or {}
    )
    if failure is not None:
        raise failure
    paired = result.extra.get("paired")
    if paired:
        from ..report.common import plural

        robust = paired["robust"]
        out.note(
            f"paired with the baseline: {plural(robust['regressed'], 'sample')} regressed, {robust['improved']} "
            f"improved (exact McNemar p = {robust['mcnemar_p']:.4g})"
        )
    for note in notes:
        out.note(note)
    if out.as_json:
        out.json(result.to_json())
    out.table(result.rich_table())
    from ..report import render_work_table

    work = render_work_table(result)
    if work is not None:
        out.table(work)
    for check in result.failed_checks:
        accepted = " (accepted)" if check.name in result.accepted_checks else ""
        out.warn(f"check {check.name} failed{accepted}: {check.detail}")
    failed = result.failed_gates
    for gate in failed:
        out.err.print(
            describe_failure(result, gate), markup=False, soft_wrap=True
        )  # one line each, for CI logs and greps
    speak_github_actions(result, out)
    out.unwritten(unwritten, bool(failed))
    if failed:
        raise typer.Exit(EXIT_GATE_FAILED)


def write_files(
    result,
    report: Optional[Path],
    markdown: Optional[Path],
    junit: Optional[Path],
    html: Optional[Path],
    samples: Optional[Path],
    robustbench_json: Optional[Path],
    entry_options: dict,
) -> tuple[list[str], list[tuple[Path, BaseException]]]:
    """Every requested file, each on its own: (notes, the outputs that could not be written with their errors)."""
    from ..report.outputs import OutputsNotWritten

    notes: list[str] = []
    unwritten: list[tuple[Path, BaseException]] = []
    try:
        notes = api_module().write_outputs(
            result, json=report, markdown=markdown, junit=junit, html=html, samples=samples
        )
    except OutputsNotWritten as exc:
        unwritten += exc.failures
    if robustbench_json is not None:
        import json

        from ..models.provenance import read_provenance
        from ..report.robustbench import write_entry

        declared = read_provenance(result.model.get("path"))  # what the model says it was trained on: additional_data
        try:
            notes += write_entry(
                json.loads(result.to_json()), robustbench_json, trained_on=declared.trained_on, **entry_options
            )
        except Exception as exc:  # noqa: BLE001 - named after the verdict, like the other outputs
            unwritten.append((robustbench_json, exc))
    return notes, unwritten


def speak_github_actions(result, out: Output) -> None:
    """Under GitHub Actions: the Markdown report on the run's summary page, and an annotation for each failed gate
    (``::error``) and sanity check (``::error`` when it fails the gate, ``::warning`` when accepted)."""
    from ..report import render_markdown
    from ..report.github import append_step_summary, gate_annotations, in_github_actions

    if not in_github_actions():
        return
    try:
        summary = render_markdown(result)
    except Exception as exc:  # noqa: BLE001 - a courtesy to the run's page must not turn a verdict into a crash
        out.err.print(
            f"warning: the step summary could not be made ({type(exc).__name__}: {exc}); the exit code is unchanged",
            markup=False,
            soft_wrap=True,
        )
    else:
        append_step_summary(summary)
    for line in gate_annotations(
        result.failed_gates, result.checks, result.accepted_checks, describe=lambda gate: describe_failure(result, gate)
    ):
        out.workflow_command(line)
