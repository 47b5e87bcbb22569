"""The report's ``--sequential`` section: where the run stopped and why, each gate's decision, every round's bounds."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .blocks import Block, Heading, paragraph, table
from .common import span

if TYPE_CHECKING:
    from .schema import Report


def _stopped(report: Report, section: dict[str, Any]) -> str:
    if report.stopped_early:
        return f"stopped after {report.n:,} of {section['max_n']:,} images, every gate decided"
    return f"attacked all {section['max_n']:,} images (a gate was not decided earlier), gated as without --sequential"


def _gate_rows(section: dict[str, Any]) -> list[list[Any]]:
    return [
        [
            name,
            entry["decision"] or "undecided",
            f"{entry['decided_at']:,}" if entry.get("decided_at") else "–",
            span(entry["bounds"], brackets=False) if entry.get("bounds") else "–",
            f"{entry['threshold']:.4f}",
        ]
        for name, entry in section["gates"].items()
    ]


def sequential_blocks(report: Report) -> list[Block]:
    """The section's blocks; none for a report of a run without ``--sequential``.

    Args:
        report: the report.
    """
    section = report.sequential
    if not section:
        return []
    quantities = list(section["method"])
    rounds = [
        [f"{entry['n']:,}"] + [span(entry[q], brackets=False) if q in entry else "–" for q in quantities]
        for entry in section["rounds"]
    ]
    return [
        Heading(2, "Sequential gates"),
        paragraph(
            f"The images were attacked in a seeded random order, round by round; {_stopped(report, section)}. Each "
            "gated quantity has an anytime-valid confidence sequence for the value the full run would measure, so the "
            f"chance that any early verdict differs from the full run's is at most α = {section['alpha']:g} "
            "(split over the quantities). Methods: "
            + "; ".join(f"{q.replace('_', ' ')}: {m}" for q, m in section["method"].items())
            + "."
        ),
        table(
            ["gate", "decision", "decided after", "bounds when decided", "threshold"],
            _gate_rows(section),
            numeric=(2, 3, 4),
            names=(0, 1),
        ),
        Heading(3, "Rounds"),
        table(
            ["images"] + [q.replace("_", " ") for q in quantities], rounds, numeric=tuple(range(len(quantities) + 1))
        ),
    ]
