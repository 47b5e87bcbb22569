"""An internal error (anything but a :class:`~hardenctl.errors.UserError`): one line, a log file, exit code 3.

A crash must never look like a failed gate (1) or a user mistake (2): CI has to tell "the model regressed" from
"the tool broke". The traceback goes to a log file (``HARDENCTL_LOG_DIR``, else the temporary directory), one per
process under torchrun, and to stderr as well with ``--debug`` (or ``HARDENCTL_DEBUG=1``).
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

from ..version import __version__

DEBUG_FLAG = "--debug"


def debug_requested(argv: list[str]) -> tuple[bool, list[str]]:
    """(whether ``--debug`` was given anywhere before a ``--``, or ``HARDENCTL_DEBUG=1``; argv without it)."""
    cut = argv.index("--") if "--" in argv else len(argv)
    found = DEBUG_FLAG in argv[:cut]
    rest = [a for a in argv[:cut] if a != DEBUG_FLAG] + argv[cut:]
    return found or os.environ.get("HARDENCTL_DEBUG") == "1", rest


def log_path() -> Path:
    """Where this process's traceback goes: ``hardenctl-error-<time>-pid<pid>[-rank<r>].log``."""
    directory = Path(os.environ.get("HARDENCTL_LOG_DIR") or tempfile.gettempdir())
    rank = os.environ.get("RANK")
    name = (
        f"hardenctl-error-{time.strftime('%Y%m%d-%H%M%S')}-pid{os.getpid()}" + (f"-rank{rank}" if rank else "") + ".log"
    )
    return directory / name


def write_log(exc: BaseException, argv: list[str]) -> Path | None:
    """The traceback, the command line and the versions in a new log file; None when it cannot be written."""
    from ..api import atomic_write

    text = (
        f"hardenctl {__version__}, python {platform.python_version()} on {platform.platform()}\n"
        f"command: hardenctl {' '.join(argv)}\n"
        f"rank: {os.environ.get('RANK', '-')} of {os.environ.get('WORLD_SIZE', '1')}\n\n"
        + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    )
    path = log_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, text)
    except OSError:
        return None
    return path


def describe(exc: BaseException, log: Path | None, rank_label: str, debug: bool) -> str:
    """The one line: what broke, that it is not a failed gate, where the traceback is."""
    message = " ".join(str(exc).split()) or "(no message)"
    if len(message) > 300:
        message = message[:297] + "..."
    where = f"traceback in {log}" if log is not None else "the log file could not be written"
    where += "" if debug else " (or rerun with --debug to print it)"
    what = (
        "the system refused an operation hardenctl needed (a file, the disk, memory)"
        if isinstance(exc, OSError)
        else "this is a crash of hardenctl"
    )
    return f"internal error{rank_label}: {type(exc).__name__}: {message}; {what}, not a failed gate (exit 3); {where}"


def print_traceback(exc: BaseException) -> None:
    traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
