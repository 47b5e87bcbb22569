"""GitHub Actions, natively: the Markdown summary on the run's page, and the gate's verdict, a usage error (exit 2) or
a crash (exit 3) as annotations.

Workflow commands (``::error title=...::message``) are how a step tells the Actions UI what failed; the step
summary (the file named by ``$GITHUB_STEP_SUMMARY``) is Markdown shown on the run's page. Both are plain text
conventions, so this is a few lines of our own rather than a dependency.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, TextIO

from .common import clean_text
from .text import code_span, escape_markdown

# what each exit code that is not a gate's verdict means, for the annotation's title and the step summary
FAILURE_KINDS = {2: "bad input", 3: "internal error"}


def in_github_actions(environ: dict[str, str] | None = None) -> bool:
    return (environ if environ is not None else os.environ).get("GITHUB_ACTIONS") == "true"


def _data(text: str) -> str:
    """A workflow command's message: %, CR and LF would end or corrupt the command."""
    return str(text).replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _property(text: str) -> str:
    """A workflow command's property value (title=...): also : and , are separators there."""
    return _data(text).replace(":", "%3A").replace(",", "%2C")


def command(level: str, title: str, message: str) -> str:
    """One workflow command line, e.g. ``::error title=gate failed%3A min_robust_acc::0.41 < 0.45``."""
    return f"::{level} title={_property(title)}::{_data(message)}"


def gate_annotations(
    gates: Iterable[Any],
    checks: Iterable[Any],
    accepted_checks: Iterable[str] = (),
    describe: Callable[[Any], str] | None = None,
) -> list[str]:
    """``::error`` for each failed gate, naming the gate, the value and the threshold (``describe(gate)``, e.g. the
    CLI's one-line failure, or a plain ``value vs threshold``); for each failed sanity check ``::error`` when it fails
    the gate (strict, the default) or ``::warning`` when it was accepted."""
    accepted = set(accepted_checks)
    lines = []
    for gate in gates:
        if gate.passed or gate.name == "sanity_checks":  # its checks are annotated one by one below
            continue
        basis = f" ({gate.basis})" if gate.basis else ""
        message = (
            describe(gate) if describe else f"{gate.name}{basis}: {gate.value:.4f} vs threshold {gate.threshold:.4f}"
        )
        lines.append(command("error", f"hardenctl gate failed: {gate.name}", message))
    for check in checks:
        if check.passed:
            continue
        level = "warning" if check.name in accepted else "error"
        verdict = "accepted" if level == "warning" else "fails the sanity_checks gate"
        lines.append(command(level, f"hardenctl sanity check failed: {check.name}", f"{check.detail} ({verdict})"))
    return lines


def append_step_summary(
    markdown: str, environ: dict[str, str] | None = None, stderr: TextIO | None = None
) -> Path | None:
    """Append to ``$GITHUB_STEP_SUMMARY`` (several steps may write to it, so append, never replace).

    The summary is a courtesy to the reader of the run's page: a path that cannot be written (a folder, a file on
    the way) changes no exit code and raises nothing; one line on stderr says so, and None is returned."""
    target = (environ if environ is not None else os.environ).get("GITHUB_STEP_SUMMARY")
    if not target:
        return None
    try:
        with open(target, "a", encoding="utf-8") as handle:
            handle.write(markdown.rstrip("\n") + "\n\n")
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        (stderr or sys.stderr).write(
            f"warning: could not append to the step summary GITHUB_STEP_SUMMARY={target!r} "
            f"({reason}); the exit code is unchanged\n"
        )
        return None
    return Path(target)


def failure_annotation(exit_code: int, command_name: str, message: str) -> str:
    """``::error title=hardenctl eval%3A bad input (exit 2)::error: ...``: a usage error (2) or a crash (3) named on
    the run's page like a failed gate is, so nobody has to open the log to see why the step is red."""
    return command("error", f"{command_name}: {FAILURE_KINDS[exit_code]} (exit {exit_code})", message)


def _fenced(text: str) -> str:
    """``text`` as a fenced code block, fenced by more backticks than any run inside it: nothing in it is Markdown."""
    line = clean_text(text)
    fence = "`" * max(3, 1 + max((len(run) for run in re.findall(r"`+", line)), default=0))
    return f"{fence}text\n{line}\n{fence}"


def failure_summary(exit_code: int, command_name: str, message: str, log: Path | None = None) -> str:
    """A few lines of Markdown for the step summary: what failed, the exit code and its meaning, the line itself,
    and for a crash where its traceback is.

    Args:
        exit_code: 2 (bad input) or 3 (an internal error).
        command_name: the command, e.g. ``hardenctl eval``.
        message: the one line printed on stderr.
        log: the log file holding a crash's traceback; None when it could not be written.
    """
    heading = f"### {escape_markdown(command_name)}: {FAILURE_KINDS[exit_code]} (exit {exit_code})"
    lines = [heading, "", _fenced(message), ""]
    if exit_code == 2:
        lines.append(
            "Exit code 2: the input or the options are wrong, which is not a failed gate. "
            "Fix what the line says and run the step again."
        )
    else:
        where = "The traceback could not be written to a log file"
        if log is not None:
            where = (
                f"The traceback is in {code_span(log)} on the runner (set `HARDENCTL_LOG_DIR` to a folder the "
                "workflow uploads to keep it)"
            )
        lines.append(
            "Exit code 3: hardenctl, torch or the system crashed, which is not a failed gate. "
            f"{where}; `--debug` prints it in the step's log."
        )
    return "\n".join(lines)
