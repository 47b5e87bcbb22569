"""The JUnit renderer: each gate and each sanity check as a test case, for CI test-report viewers.

Names and details are data; they are XML-escaped, and control characters (invalid in XML 1.0 even escaped) are
shown as their escapes, so the file always parses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from xml.sax.saxutils import escape, quoteattr

from .common import GATE_BASIS, clean_text, sequential_note

if TYPE_CHECKING:
    from .schema import Report


def _case(name: str, passed: bool, detail: str) -> str:
    text = clean_text(detail)
    body = "" if passed else f"<failure message={quoteattr(text)}>{escape(text)}</failure>"
    return f'  <testcase classname="hardenctl" name={quoteattr(clean_text(name))}>{body}</testcase>'


def render_junit(report: Report) -> str:
    """The JUnit XML document: gates first, then checks."""
    cases = [
        _case(
            f"gate.{g.name}",
            g.passed,
            f"value {g.value:.4f} vs threshold {g.threshold:.4f}"
            + (f" ({GATE_BASIS.get(g.basis, g.basis)})" if g.basis not in (None, "point") else "")
            + (f", {sequential_note(report, g)}" if sequential_note(report, g) else ""),
        )
        for g in report.gates
    ]
    cases += [_case(f"check.{c.name}", c.passed, c.detail) for c in report.checks]
    failures = sum(1 for g in report.gates if not g.passed) + sum(1 for c in report.checks if not c.passed)
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f'<testsuite name="hardenctl-eval" tests="{len(cases)}" failures="{failures}" time="{report.seconds:.3f}">\n'
        + "\n".join(cases)
        + "\n</testsuite>\n"
    )
