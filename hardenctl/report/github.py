"""GitHub Actions, natively: the Markdown summary on the run's page and the gate's verdict as annotations.

Workflow commands (``::error title=...::message``) are how a step tells the Actions UI what failed; the step
summary (the file named by ``$GITHUB_STEP_SUMMARY``) is Markdown shown on the run's page. Both are plain text
conventions, so this is a few lines of our own rather than a dependency.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterable


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


def gate_annotations(gates: Iterable[Any], checks: Iterable[Any], accepted_checks: Iterable[str] = (),
                     describe: Callable[[Any], str] | None = None) -> list[str]:
    """``::error`` for each failed gate, naming the gate, the value and the threshold (``describe(gate)``, e.g. the
    CLI's one-line failure, or a plain ``value vs threshold``); for each failed sanity check ``::error`` when it fails
    the gate (strict, the default) or ``::warning`` when it was accepted."""
    accepted = set(accepted_checks)
    lines = []
    for gate in gates:
        if gate.passed or gate.name == "sanity_checks":  # its checks are annotated one by one below
            continue
        basis = f" ({gate.basis})" if gate.basis else ""
        message = describe(gate) if describe else f"{gate.name}{basis}: {gate.value:.4f} vs threshold {gate.threshold:.4f}"
        lines.append(command("error", f"hardenctl gate failed: {gate.name}", message))
    for check in checks:
        if check.passed:
            continue
        level = "warning" if check.name in accepted else "error"
        verdict = "accepted" if level == "warning" else "fails the sanity_checks gate"
        lines.append(command(level, f"hardenctl sanity check failed: {check.name}", f"{check.detail} ({verdict})"))
    return lines


def append_step_summary(markdown: str, environ: dict[str, str] | None = None) -> Path | None:
    """Append to ``$GITHUB_STEP_SUMMARY`` (several steps may write to it, so append, never replace)."""
    target = (environ if environ is not None else os.environ).get("GITHUB_STEP_SUMMARY")
    if not target:
        return None
    with open(target, "a", encoding="utf-8") as handle:
        handle.write(markdown.rstrip("\n") + "\n\n")
    return Path(target)
