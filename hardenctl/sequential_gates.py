"""Release gates of a ``--sequential`` run that stopped early (the plan, what to decide before attacking, is made by
:func:`hardenctl.gates.sequential_plan` from the same gate options as a fixed-n run).

When the run stopped early, each gate's verdict is the
one its confidence sequence reached (``basis`` "sequential"); a run that reached ``--n`` is gated as without
``--sequential`` (:func:`hardenctl.gates.apply_gates`).
"""

from __future__ import annotations

from .errors import UserError
from .report import Gate, Report
from .report.common import sequential_note


def decided_gates(report: Report, baseline: Report | None) -> list[Gate]:
    """The gates of a run that stopped early, each as its confidence sequence decided it; ``value`` is the bound that
    decided (the lower one for a pass of a minimum, the upper one for its fail; the reverse for a drop)."""
    gates = []
    for name, entry in report.sequential["gates"].items():
        if entry.get("decision") not in ("pass", "fail"):
            raise UserError(
                f"gate {name} of a sequential run that stopped early has no decision",
                "evaluate again (the report is damaged)",
            )
        passed = entry["decision"] == "pass"
        low, high = entry["bounds"]
        value = (low if passed else high) if entry["at_least"] else (high if passed else low)
        threshold = entry["threshold"]
        if name.startswith("max_drop") and entry["at_least"]:  # a drop between rates: decided on the new accuracy
            base = getattr(baseline, name.removeprefix("max_drop_")) if baseline is not None else 0.0
            value, threshold = base - value, base - threshold
        gates.append(Gate(name, threshold, value, passed, "sequential"))
    return gates


def describe_decision(report: Report, gate: Gate) -> str:
    """What a gate of a sequential run rests on (:func:`hardenctl.report.common.sequential_note`)."""
    return sequential_note(report, gate)
