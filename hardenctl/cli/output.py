"""The one output sink of every command: tables and JSON to stdout, notes, warnings and progress to stderr."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class Output:
    """The one output sink: tables to stdout for people, JSON to stdout for machines, notes to stderr."""

    def __init__(self, quiet: bool = False, as_json: bool = False):
        self.quiet, self.as_json = quiet, as_json
        self.out = Console(highlight=False)
        self.err = Console(stderr=True, highlight=False)

    def note(self, message: str) -> None:
        if not self.quiet:
            self.err.print(message, soft_wrap=True, markup=False)  # paths and class names are data, not rich markup

    def warn(self, message: str) -> None:
        if not self.as_json or not self.quiet:
            from rich.markup import escape

            self.err.print(f"[yellow]warning:[/yellow] {escape(message)}", soft_wrap=True)

    def workflow_command(self, line: str) -> None:
        """A GitHub Actions workflow command (``::error ...``): on stdout, where the runner reads them, unless stdout
        carries the JSON report; then on stderr, which the runner reads too. Printed even with --quiet."""
        stream = sys.stderr if self.as_json else sys.stdout
        stream.write(line + "\n")
        stream.flush()

    def unwritten(self, failures: list, gate_failed: bool) -> None:
        """Outputs that failed after the verdict: each named on one line, the verdict's exit code kept (a full disk or a
        folder removed meanwhile is not a crash, and never hides a failed gate). A bug of ours with no failed gate to
        report is raised (exit 3)."""
        from ..errors import EXIT_GATE_FAILED, UserError

        bugs = [(path, error) for path, error in failures if not isinstance(error, (OSError, UserError))]
        if bugs and not gate_failed:
            from ..report import OutputsNotWritten

            raise OutputsNotWritten(bugs)
        code = EXIT_GATE_FAILED if gate_failed else 0
        for path, error in failures:
            if isinstance(error, OSError) and error.strerror:
                reason = error.strerror
            else:  # a bug of ours behind a failed gate: named, and its traceback kept as for exit 3
                from .crash import write_log

                log = write_log(error, sys.argv[1:]) if not isinstance(error, (OSError, UserError)) else None
                reason = f"{type(error).__name__}: {' '.join(str(error).split())}" + (
                    f"; traceback in {log}" if log else ""
                )
            self.err.print(
                f"error: could not write {path} ({reason}); the verdict stands: exit {code}",
                markup=False,
                soft_wrap=True,
            )

    def table(self, renderable) -> None:
        if not self.quiet and not self.as_json:
            self.out.print(renderable)

    def json(self, text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    def log_lines(self) -> bool:
        """Progress as plain lines (a log: stderr is not a terminal) rather than bars; never with --quiet."""
        return not self.quiet and not (self.err.is_terminal or force_progress())

    @contextmanager
    def progress(self) -> Iterator:
        """The progress callback ``(stage, done, total, metrics=None)`` of an evaluation: rich bars on a terminal,
        plain lines in a log (:class:`~hardenctl.cli.progress.LogProgress`), nothing with --quiet."""
        if self.log_lines():
            with self.log_progress() as lines:
                yield lines
            return
        if self.quiet or self.as_json:
            yield None
            return
        bars = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.err,
            transient=True,
        )
        tasks: dict[str, int] = {}

        def update(stage: str, done: int, total: int, metrics: dict | None = None) -> None:
            if stage not in tasks:
                tasks[stage] = bars.add_task(stage, total=total)
            bars.update(tasks[stage], completed=done)

        with bars:
            yield update

    def log_progress(self, describe=None):
        """Plain progress lines on stderr, folded in ``::group::`` blocks under GitHub Actions."""
        from ..report import in_github_actions
        from .progress import LogProgress

        def write(line: str) -> None:
            sys.stderr.write(line + "\n")
            sys.stderr.flush()

        return LogProgress(write, github=in_github_actions(), describe=describe)


def force_progress() -> bool:
    import os

    return os.environ.get("HARDENCTL_PROGRESS") == "1"
