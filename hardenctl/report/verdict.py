"""The verdict banner: pass, fail or no gate set, the gates that decided it, and the numbers a reader wants first.

A report's banner and a comparison's are made here the same way (:func:`gates_verdict`), so a gate reads the same
line in both, in the Markdown's first line, the HTML's banner and the step summary.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .blocks import Verdict
from .common import format_eps, format_points, plural, sequential_note, span

if TYPE_CHECKING:
    from .schema import Gate, Report

_DROP_BASIS = {"paired": "paired, per sample", "rates": "between the two rates"}
NO_GATE = "no threshold to pass or fail (set --min-robust-acc, --min-clean-acc or --baseline with --max-drop)"


def gate_line(gate: Gate, failing_checks: list[str], report: Report | None = None) -> str:
    """One gate as a reader checks it: ``min_robust_acc: 16.67% < 50.00%``, ``max_drop_robust_accuracy: -2.50 pts
    (paired, per sample); may fall at most 1.00 pts``, ``sanity_checks: a, b failed``; a sequential run's gate names
    the bound that decided it and after how many images.

    Args:
        gate: the gate.
        failing_checks: the sanity checks that fail the ``sanity_checks`` gate (not accepted ones).
        report: the report of a ``--sequential`` run, whose bounds a sequential gate names; None otherwise.
    """
    if gate.basis == "sequential":
        decided = sequential_note(report, gate)
        if gate.name.startswith("max_drop"):
            word = "at most" if gate.passed else "at least"
            return (
                f"{gate.name}: falls {word} {100 * gate.value:.2f} pts (may fall {100 * gate.threshold:.2f}), {decided}"
            )
        word = "at least" if gate.passed else "at most"
        return f"{gate.name}: {word} {gate.value:.2%} {'≥' if gate.passed else '<'} {gate.threshold:.2%}, {decided}"
    if gate.name == "sanity_checks":
        failed = ", ".join(failing_checks) or "a check"
        return "sanity_checks: pass" if gate.passed else f"sanity_checks: {failed} failed"
    if gate.name.startswith("max_drop"):
        how = f" ({_DROP_BASIS.get(gate.basis, gate.basis)})" if gate.basis else ""
        return f"{gate.name}: {format_points(-gate.value)}{how}; may fall at most {100 * gate.threshold:.2f} pts"
    bound = "95% lower bound " if gate.basis == "lower95" else ""
    return f"{gate.name}: {bound}{gate.value:.2%} {'≥' if gate.passed else '<'} {gate.threshold:.2%}"


def gates_verdict(
    gates: list[Gate],
    failing_checks: list[str],
    figures: tuple[tuple[str, str], ...],
    no_gate: str,
    notes: tuple[str, ...] = (),
    report: Report | None = None,
) -> Verdict:
    """FAIL naming the failed gates, PASS naming the gates passed, or NO GATES SET when only the sanity-check gate
    (which every evaluation gets) or none was set: a run with no threshold did not pass anything.

    Args:
        gates: the gates, in the order they are listed.
        failing_checks: the sanity checks that fail the ``sanity_checks`` gate.
        figures: the key numbers, (label, value) pairs.
        no_gate: the summary when no threshold was set.
        notes: lines added after the gates' lines.
        report: the report a sequential gate's bounds come from (:func:`gate_line`).
    """
    failed = [g for g in gates if not g.passed]
    if failed:
        return Verdict(
            "fail",
            "FAIL",
            f"{len(failed)} of {plural(len(gates), 'gate')} failed",
            tuple(gate_line(g, failing_checks, report) for g in failed) + notes,
            figures,
        )
    thresholds = [g for g in gates if g.name != "sanity_checks"]
    if thresholds:
        summary = f"all {plural(len(gates), 'gate')} passed" if len(gates) > 1 else "the gate passed"
        lines = tuple(gate_line(g, failing_checks, report) for g in thresholds)
        return Verdict("pass", "PASS", summary, lines + notes, figures)
    return Verdict("none", "NO GATES SET", no_gate, notes, figures)


def failing_checks(report: Any) -> list[str]:
    """The failed sanity checks that were not accepted (``--allow-check`` / ``--no-strict``), each named once.

    Args:
        report: the report (its ``failed_checks`` and ``accepted_checks``).
    """
    return list(dict.fromkeys(c.name for c in report.failed_checks if c.name not in report.accepted_checks))


def checks_note(report: Report) -> str:
    """What the sanity checks said, for the verdict: all passed, some failed but accepted, or failed (ungated).

    Args:
        report: the report.
    """
    if not report.checks:
        return "no sanity checks were recorded"
    failed = list(dict.fromkeys(c.name for c in report.failed_checks))
    if not failed:
        return f"sanity checks: all {len(report.checks)} pass"
    accepted = [name for name in failed if name in report.accepted_checks]
    if len(accepted) == len(failed):
        return f"sanity checks: {', '.join(accepted)} failed, accepted knowingly (--allow-check / --no-strict)"
    return f"sanity checks failed: {', '.join(name for name in failed if name not in accepted)}"


def report_verdict(report: Report) -> Verdict:
    """The report's banner: its gates' outcome and the numbers a reader wants first.

    Args:
        report: the report.
    """
    evaluated = f"{report.n} of {report.sequential['max_n']} (sequential)" if report.stopped_early else str(report.n)
    figures = (
        ("clean accuracy", f"{report.clean_accuracy:.2%} {span(report.interval('clean_accuracy'))}"),
        ("robust accuracy", f"{report.robust_accuracy:.2%} {span(report.interval('robust_accuracy'))}"),
        ("n", evaluated),
        (f"{report.norm} ε", format_eps(report.eps)),
        ("suite", str(report.suite)),
    )
    gated_checks = any(g.name == "sanity_checks" and not g.passed for g in report.gates)
    notes = () if gated_checks else (checks_note(report),)
    return gates_verdict(report.gates, failing_checks(report), figures, NO_GATE, notes, report)
