"""User-facing errors: one line that names the problem and the fix, exit code 2.

Everything a user can get wrong (a path, a flag, a checkpoint, a dataset) raises
:class:`UserError`; the CLI prints it without a traceback. Bugs stay ordinary
exceptions so they are never disguised as user mistakes.
"""
from __future__ import annotations

EXIT_OK = 0
EXIT_GATE_FAILED = 1
EXIT_USAGE = 2


class UserError(Exception):
    """A problem with the user's input. ``str(err)`` is the one-line message."""

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem}; {fix}" if fix else problem)


def missing_file(path: object, what: str = "file") -> UserError:
    return UserError(f"{what} not found: {path}", "check the path")
