"""``hardenctl`` command line: parse, call the API, print through one output sink.

Exit codes: 0 success and every gate passed · 1 a gate failed · 2 bad input or usage · 3 an internal error (a crash:
one line naming it and a log file holding the traceback; ``--debug`` prints the traceback too).

torch and timm take seconds to import, so this module imports them (through ``api``) only inside
the commands that need them: ``--help``, ``--version``, ``recipes`` and argument errors answer at once.
"""
from __future__ import annotations

import sys

import typer
from rich.console import Console

from ..errors import EXIT_INTERNAL, EXIT_OK, EXIT_USAGE, UserError
# importing the command modules registers their commands on the app, in this order in --help
from . import evaluate  # noqa: F401, I001
from . import harden  # noqa: F401
from . import catalog  # noqa: F401
from . import release  # noqa: F401
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


def main(argv: list[str] | None = None) -> int:
    """Console entry point: one-line errors and exit code 2 for bad input, never a traceback; exit code 3 and one
    line naming the log file for an internal error (the traceback printed too with ``--debug``)."""
    command = typer.main.get_command(app)
    err = Console(stderr=True, highlight=False)
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--"]:  # `torchrun -m hardenctl -- eval --n 100`: the `--` keeps torchrun from reading --n as its own
        argv = argv[1:]
    debug, argv = debug_requested(argv)
    try:
        code = command.main(args=argv, prog_name="hardenctl", standalone_mode=False)
        return int(code or 0) if isinstance(code, int) else EXIT_OK
    except UserError as exc:
        err.print(f"error{_rank_label()}: {exc}", markup=False, soft_wrap=True)
        return EXIT_USAGE
    except typer.Exit as exc:
        return exc.exit_code
    except cli_errors.NoArgsIsHelpError as exc:
        err.print(exc.format_message(), markup=False)
        return EXIT_USAGE
    except cli_errors.ClickException as exc:
        err.print(f"error: {exc.format_message()}", markup=False, soft_wrap=True)
        return EXIT_USAGE
    except (KeyboardInterrupt, getattr(cli_errors, "Abort", KeyboardInterrupt)):
        err.print("aborted")
        return 130
    except Exception as exc:  # a bug or a crash below us: never exit 1 (a failed gate) or 2 (a user mistake)
        if debug:
            print_traceback(exc)
        err.print(describe(exc, write_log(exc, argv), _rank_label(), debug), markup=False, soft_wrap=True)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
