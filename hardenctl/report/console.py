"""The console renderer: the summary tables ``hardenctl eval`` and ``hardenctl compare`` print, as rich Tables.

Text from the report (the architecture, attack names) is escaped for rich's markup, so a name like ``[bold]`` or
``[/x]`` is printed as spelled instead of styling the table or raising a markup error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .common import clean_text, correct_of, format_eps, span
from .comparison import metric_rows

if TYPE_CHECKING:
    from ..compare import Comparison
    from .schema import Report


def escape_console(value: object) -> str:
    """Literal text for a rich table cell or title.

    Args:
        value: the text (anything ``str`` takes).
    """
    from rich.markup import escape

    return escape(clean_text(value))


def render_table(report: Report) -> Any:
    """The table: clean, after each attack, robust (with counts when recorded, and 95% intervals), then any ε sweep.

    Args:
        report: the report.
    """
    from rich.table import Table

    counted = bool(correct_of(report.counts, "robust"))
    n = f"n={report.n} of {report.sequential['max_n']} (sequential)" if report.stopped_early else f"n={report.n}"
    threat = f"{report.norm} ε={format_eps(report.eps, decimal=False)}"
    title = f"{report.model.get('arch')} · {threat} · {n} · suite {report.suite}"
    captions = [f"randomised model: EOT over {report.eot_samples} draws"] if report.randomized else []
    if report.stopped_early:
        captions.append(
            f"--sequential: every gate decided after {report.n:,} of {report.sequential['max_n']:,} images; "
            "these rates are of the images evaluated"
        )
    table = Table(title=escape_console(title), caption=escape_console("; ".join(captions)) if captions else None)
    table.add_column("metric")
    table.add_column("accuracy", justify="right")
    if counted:
        table.add_column("correct / n", justify="right")
    table.add_column("95% interval", justify="right")

    def row(metric: str, rate: str, key: str, interval: Any) -> None:
        cells = (
            [metric, rate] + ([correct_of(report.counts, key)] if counted else []) + [span(interval, brackets=False)]
        )
        table.add_row(*cells)

    row("clean", f"{report.clean_accuracy:.2%}", "clean", report.interval("clean_accuracy"))
    for name, acc in report.attacks.items():
        row(f"after {escape_console(name)}", f"{acc:.2%}", name, report.interval(name))
    row(
        "[bold]robust (worst case)[/bold]",
        f"[bold]{report.robust_accuracy:.2%}[/bold]",
        "robust",
        report.interval("robust_accuracy"),
    )
    blank = [""] * (2 if counted else 1)
    for s in report.eps_sweep:
        table.add_row(f"ε = {format_eps(s['eps'], decimal=False)}", f"{s['robust_accuracy']:.2%}", *blank)
    return table


def render_work_table(report: Report) -> Any:
    """What each attack cost and broke (the evidence behind a speed claim); None for a report without it.

    Args:
        report: the report.
    """
    from rich.table import Table

    if not report.work:
        return None
    table = Table(title="work per attack (image-passes; re-scoring included)")
    for header, justify in (
        ("attack", "left"),
        ("seconds", "right"),
        ("forward", "right"),
        ("backward", "right"),
        ("attacked", "right"),
        ("broken", "right"),
    ):
        table.add_column(header, justify=justify)
    for name, work in report.work.items():
        table.add_row(
            escape_console(name),
            f"{work['seconds']:.1f}",
            f"{work['forward_passes']:,}",
            f"{work['backward_passes']:,}",
            str(work["attacked"]),
            str(work["broken"]),
        )
    return table


def comparison_table(comparison: Comparison) -> Any:
    """What ``hardenctl compare`` prints: clean, after each attack, robust, old beside new and the change.

    Args:
        comparison: the two reports.
    """
    from rich.table import Table

    new = comparison.new
    table = Table(
        title=escape_console(f"{new.norm} ε={format_eps(new.eps, decimal=False)} · n={new.n} · suite {new.suite}")
    )
    for header in ("metric", "old", "new", "change"):
        table.add_column(escape_console(header), justify="left" if header == "metric" else "right")
    for row in metric_rows(comparison):
        table.add_row(*(escape_console(getattr(cell, "text", cell)) for cell in row))  # a Span: its text
    return table
