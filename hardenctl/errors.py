"""User-facing errors: one line that names the problem and the fix, exit code 2.

Everything a user can get wrong (a path, a flag, a checkpoint, a dataset) raises
:class:`UserError`; the CLI prints it without a traceback. Bugs stay ordinary
exceptions so they are never disguised as user mistakes: the CLI ends them with one line
naming the error and a log file holding the traceback, and exit code 3, so a CI job can
tell "the model regressed" (1) from "the tool broke" (3).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_GATE_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3  # an internal error (a bug, or a crash of torch or the system): never a failed gate


class UserError(Exception):
    """A problem with the user's input. ``str(err)`` is the one-line message."""

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem}; {fix}" if fix else problem)


def missing_file(path: object, what: str = "file") -> UserError:
    return UserError(f"{what} not found: {path}", "check the path")
