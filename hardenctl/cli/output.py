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

    def table(self, renderable) -> None:
        if not self.quiet and not self.as_json:
            self.out.print(renderable)

    def json(self, text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    @contextmanager
    def progress(self) -> Iterator:
        """A rich progress bar callback ``(stage, done, total)``; a no-op when quiet or JSON."""
        if self.quiet or self.as_json or not self.err.is_terminal and not force_progress():
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


def force_progress() -> bool:
    import os

    return os.environ.get("HARDENCTL_PROGRESS") == "1"
