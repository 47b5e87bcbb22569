"""What ``hardenctl compare`` shows: two reports side by side, as document blocks (rendered to Markdown and HTML by
the same renderers as a report, so the tables match and names are escaped the same way) and a console table."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .common import GATE_BASIS, class_interval, correct_of, format_eps, format_points, plural, span
from .document import Block, Heading, Verdict, bold, class_label, code, gates_verdict, paired_blocks, paragraph, table
from .html import render_page
from .markdown import render_blocks

if TYPE_CHECKING:
    from ..compare import Comparison


def _cell(report: Any, metric: str, value: float | None, interval_key: str) -> str:
    if value is None:
        return "–"
    count = correct_of(report.counts, metric)
    return f"{value:.2%} {span(report.interval(interval_key))}" + (f" [{count}]" if count else "")


def _change(old: float | None, new: float | None) -> Any:
    """The change in percentage points (``-2.50 pts``, in bold when it is a fall)."""
    if old is None or new is None:
        return "–"
    text = format_points(new - old)
    return bold(text) if text.startswith("-") else text


def metric_rows(comparison: Comparison) -> list[list[Any]]:
    """clean, after each attack, robust: old, new (rate, interval, count) and the change in points."""
    old, new = comparison.old, comparison.new
    rows = [
        [
            "clean",
            _cell(old, "clean", old.clean_accuracy, "clean_accuracy"),
            _cell(new, "clean", new.clean_accuracy, "clean_accuracy"),
            _change(old.clean_accuracy, new.clean_accuracy),
        ]
    ]
    for name in new.attacks:
        rows.append(
            [
                f"after {name}",
                _cell(old, name, old.attacks.get(name), name),
                _cell(new, name, new.attacks.get(name), name),
                _change(old.attacks.get(name), new.attacks.get(name)),
            ]
        )
    rows.append(
        [
            bold("robust (worst case)"),
            _cell(old, "robust", old.robust_accuracy, "robust_accuracy"),
            _cell(new, "robust", new.robust_accuracy, "robust_accuracy"),
            _change(old.robust_accuracy, new.robust_accuracy),
        ]
    )
    return rows


def comparison_verdict(comparison: Comparison) -> Verdict:
    """The banner: the --max-drop gates' outcome, else the headline change, and the numbers a reviewer wants first."""
    old, new, paired = comparison.old, comparison.new, comparison.paired
    figures = []
    for label, key in (("robust", "robust_accuracy"), ("clean", "clean_accuracy")):
        before, after = getattr(old, key), getattr(new, key)
        figures.append((f"{label} accuracy", f"{before:.2%} → {after:.2%} ({format_points(after - before)})"))
    figures += [
        ("n", f"{new.n}, paired" if paired else str(new.n)),
        (f"{new.norm} ε", format_eps(new.eps)),
        ("suite", str(new.suite)),
    ]
    if paired:
        robust = paired["robust"]
        figures += [
            ("regressed / improved", f"{robust['regressed']} / {robust['improved']}"),
            ("McNemar p", f"{robust['mcnemar_p']:.4g}"),
        ]
    notes = tuple(
        f"{name}: sanity checks failed: {', '.join(failed)}"
        for name, failed in ((comparison.old_name, _failing_checks(old)), (comparison.new_name, _failing_checks(new)))
        if failed
    )
    headline = (
        f"no --max-drop gate; robust accuracy {format_points(new.robust_accuracy - old.robust_accuracy)}, "
        f"clean {format_points(new.clean_accuracy - old.clean_accuracy)}"
    )
    return gates_verdict(comparison.gates, [], tuple(figures), headline, notes)


def _failing_checks(report: Any) -> list[str]:
    return list(dict.fromkeys(c.name for c in report.failed_checks if c.name not in report.accepted_checks))


def build_comparison(comparison: Comparison) -> list[Block]:
    old, new = comparison.old, comparison.new
    blocks: list[Block] = [
        Heading(1, "hardenctl comparison"),
        comparison_verdict(comparison),
        paragraph(
            "Old ",
            code(comparison.old_name),
            " (model ",
            code(old.model.get("arch")),
            ", sha256 ",
            code(str(old.model_sha256)[:12]),
            ") and new ",
            code(comparison.new_name),
            " (model ",
            code(new.model.get("arch")),
            ", sha256 ",
            code(str(new.model_sha256)[:12]),
            f"): the same {plural(new.n, 'sample')} of ",
            code(new.data.get("source")),
            f", {new.norm} ε = {format_eps(new.eps)}, suite ",
            code(new.suite),
            ".",
        ),
        Heading(2, "Accuracy"),
        table(["metric", "old", "new", "change"], metric_rows(comparison), numeric=(1, 2, 3), names=(0,)),
        paragraph("Each rate with its 95% Wilson interval and [correct / n]; a fall is in bold."),
    ]
    if comparison.gates:
        blocks += [
            Heading(2, "Gates"),
            table(
                ["gate", "max drop", "drop", "compared", "result"],
                [
                    [
                        g.name,
                        f"{g.threshold:.4f}",
                        f"{g.value:.4f}",
                        GATE_BASIS.get(g.basis, g.basis or ""),
                        "pass" if g.passed else bold("FAIL"),
                    ]
                    for g in comparison.gates
                ],
                numeric=(1, 2),
                names=(0, 3, 4),
            ),
        ]
    blocks += paired_blocks(comparison.paired)
    blocks += [paragraph(f"Note: {note}.") for note in comparison.notes]
    rows = []
    for key, entry in new.per_class.items():
        before = old.per_class.get(key) or {}
        rows.append(
            [
                class_label(key, entry),
                entry["n"],
                f"{before.get('clean_accuracy', 0):.2%}" if before else "–",
                f"{entry['clean_accuracy']:.2%}",
                f"{before.get('robust_accuracy', 0):.2%} {span(class_interval(before, 'robust_accuracy'))}"
                if before
                else "–",
                f"{entry['robust_accuracy']:.2%} {span(class_interval(entry, 'robust_accuracy'))}",
                _change(before.get("robust_accuracy"), entry["robust_accuracy"]),
            ]
        )
    blocks += [
        Heading(2, "Per class"),
        table(
            ["class", "n", "clean (old)", "clean (new)", "robust (old)", "robust (new)", "robust change"],
            rows,
            numeric=(1, 2, 3, 4, 5, 6),
        ),
    ]
    return blocks


def comparison_markdown(comparison: Comparison) -> str:
    return render_blocks(build_comparison(comparison))


def comparison_html(comparison: Comparison) -> str:
    return render_page(
        build_comparison(comparison), f"hardenctl comparison: {comparison.old_name} vs {comparison.new_name}"
    )


def comparison_table(comparison: Comparison) -> Any:
    """The console table (rich), names escaped as the report's console table escapes them."""
    from rich.markup import escape
    from rich.table import Table

    from .common import clean_text

    def plain(cell: Any) -> str:
        return escape(clean_text(getattr(cell, "text", cell)))

    new = comparison.new
    table_ = Table(
        title=escape(clean_text(f"{new.norm} ε={format_eps(new.eps, decimal=False)} · n={new.n} · suite {new.suite}"))
    )
    for header in ("metric", "old", "new", "change"):
        table_.add_column(escape(clean_text(header)), justify="left" if header == "metric" else "right")
    for row in metric_rows(comparison):
        table_.add_row(*(plain(cell) for cell in row))
    return table_
