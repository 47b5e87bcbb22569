"""What ``hardenctl eval`` writes and prints once the evaluation is done: the files (each on its own, the verdict
first), the tables, the gate lines and, under GitHub Actions, the step summary and annotations."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import typer

from ..errors import EXIT_GATE_FAILED
from .options import api_module
from .output import Output


@dataclass(frozen=True)
class EvalFiles:
    """The files ``hardenctl eval`` was asked to write (None: not asked)."""

    report: Optional[Path] = None
    markdown: Optional[Path] = None
    junit: Optional[Path] = None
    html: Optional[Path] = None
    samples: Optional[Path] = None
    robustbench_json: Optional[Path] = None

    def by_option(self) -> dict[str, Optional[Path]]:
        """Each file under the option that asks for it, as the output check names them."""
        return {
            "--report": self.report,
            "--markdown": self.markdown,
            "--junit": self.junit,
            "--html": self.html,
            "--samples": self.samples,
            "--robustbench-json": self.robustbench_json,
        }


def finish(
    outcome, out: Output, files: EvalFiles, main_process: bool = True, entry_options: dict | None = None
) -> None:
    """Write the files, print, and exit 1 when a gate failed; an internal error met while gating
    (``outcome.gate_error``) is raised once every requested file is written. Under torchrun every process holds the
    whole report: rank 0 writes and prints it, the others only share its exit code.

    The verdict outranks the files: an output that fails after the evaluation (a full disk, a folder removed
    meanwhile) is named on one more line, and the exit code stays the verdict's. Only a bug of ours while writing,
    with every gate passed, ends in exit 3.
    """
    result = outcome.report
    if not main_process:
        if outcome.gate_error is not None:
            raise outcome.gate_error
        if result.failed_gates:
            raise typer.Exit(EXIT_GATE_FAILED)
        return
    notes, unwritten = write_files(result, files, entry_options or {})
    if outcome.gate_error is not None:
        raise outcome.gate_error
    print_result(result, out, notes)
    failed = result.failed_gates
    for gate in failed:  # one line each, for CI logs and greps
        out.err.print(api_module().describe_failure(result, gate), markup=False, soft_wrap=True)
    speak_github_actions(result, out)
    out.unwritten(unwritten, bool(failed))
    if failed:
        raise typer.Exit(EXIT_GATE_FAILED)


def print_result(result, out: Output, notes: list[str]) -> None:
    """The notes, the JSON (``--json``), the tables and the failed sanity checks."""
    paired = result.extra.get("paired")
    if paired:
        from ..report import plural

        robust = paired["robust"]
        out.note(
            f"paired with the baseline: {plural(robust['regressed'], 'sample')} regressed, {robust['improved']} "
            f"improved (exact McNemar p = {robust['mcnemar_p']:.4g})"
        )
    for note in notes:
        out.note(note)
    if out.as_json:
        out.json(result.to_json())
    from ..report import render_table, render_work_table

    out.table(render_table(result))
    work = render_work_table(result)
    if work is not None:
        out.table(work)
    for check in result.failed_checks:
        accepted = " (accepted)" if check.name in result.accepted_checks else ""
        out.warn(f"check {check.name} failed{accepted}: {check.detail}")


def write_files(result, files: EvalFiles, entry_options: dict) -> tuple[list[str], list[tuple[Path, BaseException]]]:
    """Every requested file, each on its own: (notes, the outputs that could not be written with their errors)."""
    from ..report import OutputsNotWritten

    notes: list[str] = []
    unwritten: list[tuple[Path, BaseException]] = []
    try:
        notes = api_module().write_outputs(
            result,
            json=files.report,
            markdown=files.markdown,
            junit=files.junit,
            html=files.html,
            samples=files.samples,
        )
    except OutputsNotWritten as exc:
        unwritten += exc.failures
    if files.robustbench_json is not None:
        import json

        try:
            notes += api_module().write_robustbench_entry(
                json.loads(result.to_json()), files.robustbench_json, **entry_options
            )
        except Exception as exc:  # noqa: BLE001 - named after the verdict, like the other outputs
            unwritten.append((files.robustbench_json, exc))
    return notes, unwritten


def speak_github_actions(result, out: Output) -> None:
    """Under GitHub Actions: the Markdown report on the run's summary page, and an annotation for each failed gate
    (``::error``) and sanity check (``::error`` when it fails the gate, ``::warning`` when accepted)."""
    from ..report import append_step_summary, gate_annotations, in_github_actions, render_markdown

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
        result.failed_gates,
        result.checks,
        result.accepted_checks,
        describe=lambda gate: api_module().describe_failure(result, gate),
    ):
        out.workflow_command(line)
