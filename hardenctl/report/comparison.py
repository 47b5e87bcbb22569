"""What ``hardenctl compare`` says: two reports side by side, as document blocks (:mod:`.blocks`).

The Markdown and the HTML renderer spell these blocks as they spell a report's, so the tables match and names are
escaped the same way; the console renderer prints :func:`metric_rows` as its table.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .blocks import Block, Heading, Verdict, bold, code, paragraph, table
from .common import class_interval, correct_of, format_eps, format_points, plural, span
from .document import class_label, gates_table
from .paired_section import paired_blocks
from .verdict import failing_checks, gates_verdict

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
    """clean, after each attack, robust: old, new (rate, interval, count) and the change in points.

    Args:
        comparison: the two reports.
    """
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
    """The banner: the --max-drop gates' outcome, else the headline change, and the numbers a reviewer wants first.

    Args:
        comparison: the two reports and their gates.
    """
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
        for name, failed in ((comparison.old_name, failing_checks(old)), (comparison.new_name, failing_checks(new)))
        if failed
    )
    headline = (
        f"no --max-drop gate; robust accuracy {format_points(new.robust_accuracy - old.robust_accuracy)}, "
        f"clean {format_points(new.clean_accuracy - old.clean_accuracy)}"
    )
    return gates_verdict(comparison.gates, [], tuple(figures), headline, notes)


def build_comparison(comparison: Comparison) -> list[Block]:
    """The compare page's content, in the order it is read.

    Args:
        comparison: the two reports, their paired comparison and gates.
    """
    blocks: list[Block] = [
        Heading(1, "hardenctl comparison"),
        comparison_verdict(comparison),
        _sides(comparison),
        Heading(2, "Accuracy"),
        table(["metric", "old", "new", "change"], metric_rows(comparison), numeric=(1, 2, 3), names=(0,)),
        paragraph("Each rate with its 95% Wilson interval and [correct / n]; a fall is in bold."),
    ]
    if comparison.gates:
        blocks += [Heading(2, "Gates"), gates_table(comparison.gates, "max drop", "drop")]
    blocks += paired_blocks(comparison.paired)
    blocks += [paragraph(f"Note: {note}.") for note in comparison.notes]
    return blocks + _per_class(comparison)


def _sides(comparison: Comparison) -> Block:
    """Which two files, which models, and the evaluation both are of."""
    old, new = comparison.old, comparison.new
    return paragraph(
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
    )


def _per_class(comparison: Comparison) -> list[Block]:
    """Each class of the new report beside the old one's, and the change in its robust accuracy."""
    rows = []
    for key, entry in comparison.new.per_class.items():
        before = comparison.old.per_class.get(key) or {}
        old_robust = f"{before.get('robust_accuracy', 0):.2%} {span(class_interval(before, 'robust_accuracy'))}"
        rows.append(
            [
                class_label(key, entry),
                entry["n"],
                f"{before.get('clean_accuracy', 0):.2%}" if before else "–",
                f"{entry['clean_accuracy']:.2%}",
                old_robust if before else "–",
                f"{entry['robust_accuracy']:.2%} {span(class_interval(entry, 'robust_accuracy'))}",
                _change(before.get("robust_accuracy"), entry["robust_accuracy"]),
            ]
        )
    return [
        Heading(2, "Per class"),
        table(
            ["class", "n", "clean (old)", "clean (new)", "robust (old)", "robust (new)", "robust change"],
            rows,
            numeric=(1, 2, 3, 4, 5, 6),
        ),
    ]
