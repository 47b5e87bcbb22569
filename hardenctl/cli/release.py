"""``hardenctl compare`` and ``hardenctl card``: what a release reviewer reads, made from reports (no attack runs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from ..errors import EXIT_GATE_FAILED, UserError
from .app import app
from .output import Output

if TYPE_CHECKING:
    from ..models.provenance import Provenance


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
            help="Gate: fail (exit 1) when clean or robust accuracy falls by more than this fraction (paired when both per-sample files exist)"
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
    from ..compare import compare
    from ..report.comparison import comparison_table
    from ..report.github import gate_annotations, in_github_actions
    from .options import check_outputs

    check_outputs({"--markdown": markdown, "--html": html, "--report": report}, pictures=False)
    out = Output(quiet, as_json)
    result = compare(old, new, old_samples=old_samples, new_samples=new_samples, max_drop=max_drop)
    for note in result.notes:
        out.note(note)
    if result.paired:
        from ..report.common import plural

        robust = result.paired["robust"]
        out.note(
            f"paired: {plural(robust['regressed'], 'sample')} regressed, {robust['improved']} improved "
            f"(exact McNemar p = {robust['mcnemar_p']:.4g})"
        )
    if as_json:
        out.json(json.dumps(result.to_dict(), indent=2) + "\n")
    out.table(comparison_table(result))
    for gate in result.failed_gates:
        out.err.print(result.describe_failure(gate), markup=False, soft_wrap=True)
    if in_github_actions():
        for line in gate_annotations(result.failed_gates, [], describe=result.describe_failure):
            out.workflow_command(line)
    write_comparison(result, out, markdown, html, report)
    if result.failed_gates:
        raise typer.Exit(EXIT_GATE_FAILED)


def write_comparison(
    result, out: Output, markdown: Optional[Path], html: Optional[Path], report: Optional[Path]
) -> None:
    """The comparison's files and the step summary, after the verdict: one that fails (a full disk, a folder removed
    meanwhile) is named on one line and the verdict's exit code stands; a bug of ours with no failed gate is exit 3."""
    from ..files import atomic_write
    from ..report.comparison import comparison_html, comparison_markdown
    from ..report.github import append_step_summary, in_github_actions

    failures: list[tuple[Path, BaseException]] = []
    for path, render in (
        (markdown, lambda: comparison_markdown(result)),
        (html, lambda: comparison_html(result)),
        (report, lambda: json.dumps(result.to_dict(), indent=2) + "\n"),
    ):
        if path is None:
            continue
        try:
            atomic_write(path, render())
        except Exception as exc:  # noqa: BLE001 - named below; the verdict outranks the files
            failures.append((path, exc))
    if in_github_actions():
        try:
            append_step_summary(comparison_markdown(result))
        except Exception as exc:  # noqa: BLE001 - a courtesy to the run's page
            failures.append((Path("$GITHUB_STEP_SUMMARY"), exc))
    out.unwritten(failures, bool(result.failed_gates))


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
            help="The evaluation data's readable name in the card (default: the data source's file or folder name, never "
            "its path)"
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
    robustbench_dataset: Annotated[
        Optional[str],
        typer.Option(
            help="The entry's RobustBench dataset: cifar10, cifar100 or imagenet (default: recognised from the data's "
            "name, else left empty)"
        ),
    ] = None,
    additional_data: Annotated[
        Optional[bool],
        typer.Option(
            "--additional-data/--no-additional-data",
            help="The entry's additional_data: whether the model was (pre-)trained on data besides the evaluated set "
            "(default: true when the input model declares such data)",
        ),
    ] = None,
) -> None:
    """Write a model card (README.md, as the Hugging Face Hub shows it) for a model evaluated or hardened by hardenctl,
    and optionally its RobustBench entry. Nothing is written when any input or output path is wrong."""
    from ..files import atomic_write, check_output_dir, check_output_file
    from ..models.provenance import read_provenance
    from ..report import read_report_json
    from ..report.card import CardOptions, is_harden_report, model_card
    from ..report.robustbench import check_dataset_key, entry_json, robustbench_entry

    data = read_report_json(report_path)
    _check_card_flags(repo_id, dataset, dataset_name, name, license_id)
    rb_key = check_dataset_key(robustbench_dataset) if robustbench_dataset is not None else None
    readme = out_dir / "README.md"
    check_output_dir(out_dir, "--out")
    check_output_file(readme, "--out")
    if robustbench_json is not None:
        check_output_file(robustbench_json, "--robustbench-json")
    harden = is_harden_report(data)
    declared = read_provenance(((data["input"] if harden else data).get("model") or {}).get("path"))
    inherited = declared.card_fields(derived=harden)
    if license_id is not None:
        inherited.update(license=license_id.lower(), license_name=None, license_link=None)
    options = CardOptions(model_name=name, repo_id=repo_id, dataset_id=dataset, dataset_name=dataset_name, **inherited)
    card = model_card(data, options)
    notes = _license_notes(license_id, options.license, declared)
    entry = None
    if robustbench_json is not None:
        entry, entry_notes = robustbench_entry(
            data, name, dataset=rb_key, additional=additional_data, trained_on=declared.trained_on, hub_dataset=dataset
        )
        entry, notes = entry_json(entry), notes + entry_notes
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(readme, str(card))
    if entry is not None:
        atomic_write(robustbench_json, entry)
    out = Output()
    for note in notes:
        out.note(note)
    out.note(f"wrote {readme}" + (f" and {robustbench_json}" if robustbench_json else ""))


def _check_card_flags(
    repo_id: Optional[str],
    dataset: Optional[str],
    dataset_name: Optional[str],
    name: Optional[str],
    license_id: Optional[str],
) -> None:
    """One-line errors (exit 2) for card flags the Hub would refuse or a card could not state."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    from ..models.provenance import LICENSE_ID

    ids = (("--repo-id", repo_id, "my-org/resnet50-robust"), ("--dataset", dataset, "uoft-cs/cifar10"))
    for flag, value, example in ids:
        if value is None:
            continue
        try:
            validate_repo_id(value)
        except HFValidationError as exc:
            problem = str(exc).splitlines()[0].replace("\r", " ")
            raise UserError(f"{flag} {value!r} is not a Hub id ({problem})", f"pass e.g. {flag} {example}") from None
        if flag == "--repo-id" and value.count("/") != 1:
            raise UserError(f"--repo-id {value!r} is not ORG/NAME", f"pass e.g. --repo-id {example}")
    for flag, value in (("--dataset-name", dataset_name), ("--name", name)):
        if value is not None and (not value.strip() or not value.isprintable() or value.startswith(("/", "~"))):
            raise UserError(
                f"{flag} {value!r} is not a name (empty, several lines, or a path)",
                f"pass a short readable name, e.g. {flag} 'CIFAR-10 test'",
            )
    if license_id is not None and not LICENSE_ID.fullmatch(license_id.lower()):
        raise UserError(
            f"--license {license_id!r} is not a license id",
            "pass a Hub/SPDX license id, e.g. --license apache-2.0, mit, cc-by-nc-4.0 or other",
        )


def _license_notes(license_id: Optional[str], chosen: Optional[str], declared: Provenance) -> list[str]:
    """What the user should know about the card's license: inherited from where, or missing and how to set it."""
    if license_id is not None:
        return []
    if chosen is not None:
        return [f"license: {chosen}, as {declared.spec}'s {declared.license_from} declares (--license to change it)"]
    why = "; ".join(declared.problems) or f"{declared.spec} declares none"
    return [f"the card has no license ({why}): pass --license (e.g. --license apache-2.0) before publishing it"]
