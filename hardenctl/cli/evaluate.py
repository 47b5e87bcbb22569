"""``hardenctl eval``: measure clean and robust accuracy, write the reports, gate on them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from .app import app
from .eval_outputs import EvalFiles, finish
from .options import (
    AdditionalDataOption,
    ArchOption,
    Checkpoint,
    CropModeOption,
    CropPctOption,
    InputSizeOption,
    InterpolationOption,
    MeanOption,
    NumClassesOption,
    ResizeOption,
    RobustBenchDatasetOption,
    SkipUnreadableOption,
    StdOption,
    WorkersOption,
    api_module,
    check_outputs,
    model_options,
    parse_attack_list,
    parse_batch_size,
    parse_eps,
    parse_names,
    require_model,
    robustbench_options,
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
            help=(
                "Evaluate the first n samples (under torchrun spell it -n or --num-samples: torchrun reads --n as its "
                "own --nnodes)"
            ),
        ),
    ] = 1000,
    batch_size: Annotated[
        str,
        typer.Option(
            help=(
                "Batch size, or auto: the largest whose attack passes fit in memory (the fastest; the report records "
                "the choice)"
            )
        ),
    ] = "128",
    eval_precision: Annotated[
        str,
        typer.Option(
            help=(
                "Precision of the attacks' search: auto (bf16 on a CUDA GPU, else fp32), fp32, bf16; every verdict "
                "is re-scored in fp32"
            )
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
            help=(
                "The --baseline's per-sample results (its --samples file) for a paired, per-sample comparison; "
                "default: "
                "the file the baseline report recorded, else BASELINE.samples.jsonl beside it"
            )
        ),
    ] = None,
    gate_on: Annotated[
        str,
        typer.Option(
            help=(
                "--min-*-acc gates compare with the point estimate (point) or the 95% Wilson interval's lower bound "
                "(lower)"
            )
        ),
    ] = "point",
    sequential: Annotated[
        bool,
        typer.Option(
            "--sequential",
            help=(
                "Attack the images in a seeded random order, one batch per process and round, and stop as soon as "
                "every "
                "gate is decided by an anytime-valid confidence sequence; the chance the early verdict differs from "
                "the full --n run's is at most --alpha"
            ),
        ),
    ] = False,
    alpha: Annotated[
        Optional[float],
        typer.Option(
            help=(
                "With --sequential: the chance, at most, that an early verdict differs from the full run's, over all "
                "gates (default 0.05)"
            )
        ),
    ] = None,
    samples: Annotated[
        Optional[Path],
        typer.Option(help="Write per-sample results here (JSON lines, with a header naming this report)"),
    ] = None,
    strict: Annotated[
        bool,
        typer.Option(
            help=(
                "A failed sanity check fails the gate (default); --no-strict accepts every failure, recorded in the "
                "report"
            )
        ),
    ] = True,
    allow_check: Annotated[
        Optional[list[str]],
        typer.Option(help="Accept this failed sanity check knowingly (repeatable); recorded in the report"),
    ] = None,
    protected: Annotated[
        Optional[str],
        typer.Option(
            help=(
                "Protected classes, ids or class names, e.g. 3,5: adds their clean/robust accuracy and the "
                "cost-weighted "
                "robust error"
            )
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
            help=(
                "AToP composite: one noise and mask from --seed for every image (deterministic, for debugging; not "
                "the deployed defence)"
            )
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
            help=(
                "Keep every sample's worst-case adversarial image in this directory (float32, lossless: one .npz per "
                "batch, named by sample index)"
            )
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
    robustbench_dataset: RobustBenchDatasetOption = None,
    additional_data: AdditionalDataOption = None,
) -> None:
    """Measure clean and robust accuracy of a checkpoint and gate on it.

    Several GPUs, CPU processes or nodes: torchrun --nproc_per_node=N -m hardenctl eval ... (batches are split
    over the processes; the report is the same as one process's, and only rank 0 writes it).
    """
    main_process = os.environ.get("RANK", "0") == "0"  # under torchrun only rank 0 prints and writes the report
    out = Output(quiet or not main_process, as_json and main_process)
    entry_options = robustbench_options(robustbench_json, robustbench_dataset, additional_data)
    files = EvalFiles(report, markdown, junit, html, samples, robustbench_json)
    check_outputs(files.by_option(), {"--save-adversarial": save_adversarial, "--resume-dir": resume_dir})
    require_model(checkpoint)  # a mistyped path answers before torch is imported
    api = api_module()
    norm = word(norm)
    config = api.EvalConfig(
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
    )
    gates = api.GateOptions(
        min_clean_acc=min_clean_acc,
        min_robust_acc=min_robust_acc,
        min_protected_robust_acc=min_protected_robust_acc,
        baseline=baseline,
        baseline_samples=baseline_samples,
        max_drop=max_drop,
        strict=strict,
        allow_check=tuple(word(name) for name in allow_check or ()),
        gate_on=word(gate_on),
    )
    request = api.EvalRequest(
        model=checkpoint,
        data=data,
        config=config,
        run=api.EvalRun(resume_dir=resume_dir, resume=resume, save_adversarial=save_adversarial, pictures=pictures),
        gates=gates,
        loading=model_options(
            arch, num_classes, mean, std, input_size, resize, crop_pct, interpolation, crop_mode, device
        ),
        reading=api.DataOptions(workers, skip_unreadable),
        protected=parse_names(protected),
        protected_cost=protected_cost,
        sequential=sequential,
        alpha=alpha,
        fixed_mask=fixed_mask,
    )
    with out.progress() as progress:
        outcome = api.run_evaluation(request, progress, out.note)
    finish(outcome, out, files, main_process, entry_options)
