"""``hardenctl compare`` and ``hardenctl card``: what a release reviewer reads, made from reports (no attack runs)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import EXIT_GATE_FAILED, UserError
from .app import app
from .output import Output


@app.command("compare")
def compare_command(
    old: Annotated[Path, typer.Argument(help="The earlier report.json (e.g. the last release's)")],
    new: Annotated[Path, typer.Argument(help="The candidate's report.json, made with the same eps, norm, suite, n and data")],
    old_samples: Annotated[Optional[Path], typer.Option(help="OLD's per-sample results (default: the file it recorded, else OLD.samples.jsonl)")] = None,
    new_samples: Annotated[Optional[Path], typer.Option(help="NEW's per-sample results (default: as for OLD)")] = None,
    max_drop: Annotated[Optional[float], typer.Option(help="Gate: fail (exit 1) when clean or robust accuracy falls by more than this fraction (paired when both per-sample files exist)")] = None,
    markdown: Annotated[Optional[Path], typer.Option(help="Write the comparison as Markdown here")] = None,
    html: Annotated[Optional[Path], typer.Option(help="Write the comparison as a self-contained HTML page here")] = None,
    report: Annotated[Optional[Path], typer.Option(help="Write the comparison as JSON here")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the comparison as JSON on stdout")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No table")] = False,
) -> None:
    """Compare two reports side by side: clean, robust, per class, intervals, and the paired McNemar test when both
    per-sample files exist. No attack runs. Exit 1 when a --max-drop gate fails."""
    from ..compare import compare
    from ..files import atomic_write
    from ..gates import describe_failure
    from ..report.comparison import comparison_html, comparison_markdown, comparison_table
    from ..report.github import append_step_summary, gate_annotations, in_github_actions

    out = Output(quiet, as_json)
    result = compare(old, new, old_samples=old_samples, new_samples=new_samples, max_drop=max_drop)
    text = comparison_markdown(result)
    for path, content in ((markdown, lambda: text), (html, lambda: comparison_html(result)),
                          (report, lambda: json.dumps(result.to_dict(), indent=2) + "\n")):
        if path is not None:
            atomic_write(path, content())
    for note in result.notes:
        out.note(note)
    if result.paired:
        robust = result.paired["robust"]
        out.note(f"paired: {robust['regressed']} samples regressed, {robust['improved']} improved "
                 f"(exact McNemar p = {robust['mcnemar_p']:.4g})")
    if as_json:
        out.json(json.dumps(result.to_dict(), indent=2) + "\n")
    out.table(comparison_table(result))
    for gate in result.failed_gates:
        out.err.print(describe_failure(result.new, gate), markup=False, soft_wrap=True)
    if in_github_actions():
        append_step_summary(text)
        for line in gate_annotations(result.failed_gates, [], describe=lambda gate: describe_failure(result.new, gate)):
            out.workflow_command(line)
    if result.failed_gates:
        raise typer.Exit(EXIT_GATE_FAILED)


@app.command("card")
def card_command(
    report_path: Annotated[Path, typer.Argument(metavar="REPORT", help="A report.json from `hardenctl eval --report` or `harden --out`")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write README.md (the model card) into, e.g. the model folder")],
    repo_id: Annotated[Optional[str], typer.Option(help="The Hub repo the folder is pushed to (ORG/NAME): loading snippets use it")] = None,
    dataset: Annotated[Optional[str], typer.Option(help="The Hub dataset id of the evaluation data (e.g. uoft-cs/cifar10), listed under datasets")] = None,
    name: Annotated[Optional[str], typer.Option(help="The model's name in the card (default: from --repo-id or the architecture)")] = None,
    robustbench_json: Annotated[Optional[Path], typer.Option(help="Also write a RobustBench-style model_info entry here")] = None,
) -> None:
    """Write a model card (README.md, as the Hugging Face Hub shows it) for a model evaluated or hardened by hardenctl."""
    from ..files import atomic_write
    from ..report import read_report_json
    from ..report.card import model_card

    data = read_report_json(report_path)
    if repo_id is not None and repo_id.count("/") != 1:
        raise UserError(f"--repo-id {repo_id!r} is not ORG/NAME", "pass e.g. --repo-id my-org/resnet50-robust")
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir} is a file", "pass a folder (the model folder, or a new one)")
    card = model_card(data, model_name=name, dataset_id=dataset, repo_id=repo_id)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(out_dir / "README.md", str(card))
    if robustbench_json is not None:
        from ..report.robustbench import write_entry

        write_entry(data, robustbench_json, name)
    Output().note(f"wrote {out_dir / 'README.md'}" + (f" and {robustbench_json}" if robustbench_json else ""))
