"""``hardenctl`` command line: parse, call the API, print through one output sink.

Exit codes: 0 success and every gate passed · 1 a gate failed · 2 bad input or usage · 3 an internal error (a crash:
one line naming it and a log file holding the traceback; ``--debug`` prints the traceback too).

torch and timm take seconds to import, so this module imports them (through ``api``) only inside
the commands that need them: ``--help``, ``--version``, ``recipes`` and argument errors answer at once.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console

from ..errors import EXIT_INTERNAL, EXIT_OK, EXIT_USAGE, UserError

# importing the command modules registers their commands on the app, in this order in --help
from . import (
    catalog,  # noqa: F401
    evaluate,  # noqa: F401, I001
    harden,  # noqa: F401
    release,  # noqa: F401
)
from .app import app
from .crash import debug_requested, describe, print_traceback, write_log

try:  # typer >= 0.20 carries its own copy of click
    from typer._click import exceptions as cli_errors
except ImportError:  # pragma: no cover - older typer on top of click
    from click import exceptions as cli_errors

__all__ = ["app", "main"]


def _rank_label() -> str:
    """`` (rank 1 of 2)`` under torchrun, where every process prints its own errors; empty otherwise."""
    import os

    world = os.environ.get("WORLD_SIZE", "1")
    return f" (rank {os.environ.get('RANK', '0')} of {world})" if world not in ("", "1") else ""


def _command_name(command, argv: list[str]) -> str:
    """``hardenctl eval`` for the annotation's title: the subcommand only when it is one of ours (argv is data)."""
    name = argv[0] if argv else ""
    return f"hardenctl {name}" if name in getattr(command, "commands", {}) else "hardenctl"


def _failure(exc: Exception, argv: list[str], debug: bool) -> tuple[int, str, Path | None]:
    """(exit code, the one line for stderr, the crash log) for an exception that ended a command."""
    if isinstance(exc, UserError):
        return EXIT_USAGE, f"error{_rank_label()}: {exc}", None
    if isinstance(exc, cli_errors.NoArgsIsHelpError):
        return EXIT_USAGE, exc.format_message(), None  # the command's help: it was given no arguments
    if isinstance(exc, cli_errors.ClickException):
        return EXIT_USAGE, f"error: {exc.format_message()}", None
    if debug:  # a bug or a crash below us: never exit 1 (a failed gate) or 2 (a user mistake)
        print_traceback(exc)
    log = write_log(exc, argv)
    return EXIT_INTERNAL, describe(exc, log, _rank_label(), debug), log


def _tell_github_actions(code: int, message: str, command_name: str, log: Path | None, argv: list[str]) -> None:
    """Under GitHub Actions, exit 2 and 3 are named on the run's page too: an ``::error`` annotation with the one
    line, and a few lines in the step summary (a summary that cannot be written warns on stderr, nothing more)."""
    from ..report import append_step_summary, failure_annotation, failure_summary, in_github_actions

    if not in_github_actions():
        return
    stream = sys.stderr if "--json" in argv else sys.stdout  # stdout may carry JSON; the runner reads both
    stream.write(failure_annotation(code, command_name, message) + "\n")
    stream.flush()
    append_step_summary(failure_summary(code, command_name, message, log))


def main(argv: list[str] | None = None) -> int:
    """Console entry point: one-line errors and exit code 2 for bad input, never a traceback; exit code 3 and one
    line naming the log file for an internal error (the traceback printed too with ``--debug``). Under GitHub
    Actions both also leave an annotation and a step summary."""
    command = typer.main.get_command(app)
    err = Console(stderr=True, highlight=False)
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == [
        "--"
    ]:  # `torchrun -m hardenctl -- eval --n 100`: the `--` keeps torchrun from reading --n as its own
        argv = argv[1:]
    debug, argv = debug_requested(argv)
    try:
        code = command.main(args=argv, prog_name="hardenctl", standalone_mode=False)
        return int(code or 0) if isinstance(code, int) else EXIT_OK
    except typer.Exit as exc:
        return exc.exit_code
    except (KeyboardInterrupt, getattr(cli_errors, "Abort", KeyboardInterrupt)):
        err.print("aborted")
        return 130
    except Exception as exc:
        code, line, log = _failure(exc, argv, debug)
        help_text = isinstance(exc, cli_errors.NoArgsIsHelpError)  # the command's help: keeps its own wrapping
        err.print(line, markup=False, soft_wrap=not help_text)
        name = _command_name(command, argv)
        message = f"error: no arguments given; `{name} --help` shows what {name} needs" if help_text else line
        _tell_github_actions(code, message, name, log, argv)
        return code


if __name__ == "__main__":
    sys.exit(main())
