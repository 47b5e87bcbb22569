"""``hardenctl compare`` and ``hardenctl card``: what a release reviewer reads, made from reports (no attack runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import EXIT_GATE_FAILED
from .app import app
from .options import AdditionalDataOption, RobustBenchDatasetOption
from .output import Output


@app.command("compare")
def compare_command(
    old: Annotated[Path, typer.Argument(help="The earlier report.json (e.g. the last release's)")],
    new: Annotated[
        Path, typer.Argument(help="The candidate's report.json, made with the same eps, norm, suite, n and data")
    ],
    old_samples: Annotated[
        Optional[Path],
        typer.Option(help="OLD's per-sample results (default: the file it recorded, else OLD.samples.jsonl)"),
    ] = None,
    new_samples: Annotated[Optional[Path], typer.Option(help="NEW's per-sample results (default: as for OLD)")] = None,
    max_drop: Annotated[
        Optional[float],
        typer.Option(
            help="Gate: fail (exit 1) when clean or robust accuracy falls by more than this fraction (paired when both "
            "per-sample files exist)"
        ),
    ] = None,
    markdown: Annotated[Optional[Path], typer.Option(help="Write the comparison as Markdown here")] = None,
    html: Annotated[
        Optional[Path], typer.Option(help="Write the comparison as a self-contained HTML page here")
    ] = None,
    report: Annotated[Optional[Path], typer.Option(help="Write the comparison as JSON here")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the comparison as JSON on stdout")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No table")] = False,
) -> None:
    """Compare two reports side by side: clean, robust, per class, intervals, and the paired McNemar test when both
    per-sample files exist. No attack runs. Exit 1 when a --max-drop gate fails."""
    from ..api.release import compare, write_comparison
    from ..report import comparison_table, gate_annotations, in_github_actions
    from .options import check_outputs

    check_outputs({"--markdown": markdown, "--html": html, "--report": report}, pictures=False)
    out = Output(quiet, as_json)
    result = compare(old, new, old_samples=old_samples, new_samples=new_samples, max_drop=max_drop)
    for note in result.notes:
        out.note(note)
    if result.paired:
        out.note(result.paired_summary())
    if as_json:
        out.json(result.to_json())
    out.table(comparison_table(result))
    for gate in result.failed_gates:
        out.err.print(result.describe_failure(gate), markup=False, soft_wrap=True)
    github = in_github_actions()
    if github:
        for line in gate_annotations(result.failed_gates, [], describe=result.describe_failure):
            out.workflow_command(line)
    # the files and the step summary come after the verdict: one that fails (a full disk, a folder removed meanwhile)
    # is named on one line and the verdict's exit code stands; a bug of ours with no failed gate is exit 3
    failures = write_comparison(result, markdown, html, report, step_summary=github)
    out.unwritten(failures, bool(result.failed_gates))
    if result.failed_gates:
        raise typer.Exit(EXIT_GATE_FAILED)


@app.command("card")
def card_command(
    report_path: Annotated[
        Path, typer.Argument(metavar="REPORT", help="A report.json from `hardenctl eval --report` or `harden --out`")
    ],
    out_dir: Annotated[
        Path, typer.Option("--out", help="Folder to write README.md (the model card) into, e.g. the model folder")
    ],
    repo_id: Annotated[
        Optional[str], typer.Option(help="The Hub repo the folder is pushed to (ORG/NAME): loading snippets use it")
    ] = None,
    dataset: Annotated[
        Optional[str],
        typer.Option(
            help="The Hub dataset id of the evaluation data (e.g. uoft-cs/cifar10): listed under datasets and as the "
            "results' dataset type"
        ),
    ] = None,
    dataset_name: Annotated[
        Optional[str],
        typer.Option(
            help="The evaluation data's readable name in the card (default: the data source's file or folder name, "
            "never its path)"
        ),
    ] = None,
    name: Annotated[
        Optional[str],
        typer.Option(
            help="The model's name in the card (default: from --repo-id, else the evaluated model's Hub name or "
            "architecture; a harden report's adds -hardened)"
        ),
    ] = None,
    license_id: Annotated[
        Optional[str],
        typer.Option(
            "--license",
            help="The card's license, a Hub/SPDX id such as apache-2.0 or mit (default: the input model's, "
            "when its card or config.json declares one)",
        ),
    ] = None,
    robustbench_json: Annotated[
        Optional[Path],
        typer.Option(help="Also write a RobustBench model_info entry here (the printed note says where it goes)"),
    ] = None,
    robustbench_dataset: RobustBenchDatasetOption = None,
    additional_data: AdditionalDataOption = None,
) -> None:
    """Write a model card (README.md, as the Hugging Face Hub shows it) for a model evaluated or hardened by hardenctl,
    and optionally its RobustBench entry. Nothing is written when any input or output path is wrong."""
    from ..api.release import CardRequest, write_card

    request = CardRequest(
        name=name,
        repo_id=repo_id,
        dataset=dataset,
        dataset_name=dataset_name,
        license=license_id,
        robustbench_json=robustbench_json,
        robustbench_dataset=robustbench_dataset,
        additional_data=additional_data,
    )
    notes = write_card(report_path, out_dir, request)
    out = Output()
    for note in notes:
        out.note(note)
    out.note(f"wrote {out_dir / 'README.md'}" + (f" and {robustbench_json}" if robustbench_json else ""))
