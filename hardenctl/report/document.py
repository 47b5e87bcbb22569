"""What a report says, as document blocks (:mod:`.blocks`): built once here, spelled by the Markdown and the HTML
renderer in their own syntax.

The banner comes from :mod:`.verdict`, the ``--sequential`` section from :mod:`.sequential_section` and the paired
comparison from :mod:`.paired_section`; the rest (the threat model, the accuracies, the work, the checks and gates,
the per-class table, what the run rests on) is here, one function per section.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .blocks import Block, Heading, Image, Span, bold, code, paragraph, spans, table
from .common import GATE_BASIS, class_interval, correct_of, format_eps, span
from .paired_section import paired_blocks
from .sequential_section import sequential_blocks
from .verdict import report_verdict

if TYPE_CHECKING:
    from .schema import Report


def build(report: Report, plot: bool = False, pictures: bool = False) -> list[Block]:
    """The report's content, in the order it is read.

    Args:
        report: the report.
        plot: whether the accuracy-vs-ε curve is shown (under the ε sweep's table).
        pictures: whether the adversarial examples' pictures are shown.
    """
    blocks: list[Block] = [Heading(1, "hardenctl robustness report"), report_verdict(report), _threat(report)]
    blocks += _metrics(report)
    blocks += _notes(report)
    blocks += _sweep(report, plot)
    if pictures:
        blocks += [
            Heading(2, "Adversarial examples"),
            Image("clean, adversarial and amplified perturbation", "pictures"),
        ]
    blocks += _work(report)
    blocks += _checks_and_gates(report)
    blocks += sequential_blocks(report)
    blocks += paired_blocks(report.extra.get("paired"))
    blocks += _protected(report)
    blocks += _per_class(report)
    blocks.append(_provenance(report))
    return blocks


def execution_text(execution: dict[str, Any]) -> str:
    """``, batch 200 (auto), attacks searched in bf16, every verdict re-scored in fp32`` (empty for older reports).

    Args:
        execution: the report's ``execution`` section.
    """
    if not execution:
        return ""
    auto = " (auto)" if execution.get("batch_size_auto") else ""
    text = f", batch {execution.get('batch_size')}{auto}"
    if execution.get("search_precision") == "bf16":
        return text + ", attacks searched in bf16 autocast, every verdict re-scored in fp32"
    return text + ", attacks in fp32"


def class_label(key: str, entry: dict[str, Any]) -> str:
    """``8 Samoyed (n02111889)`` where the data gave a name people know, else ``8 n02111889``; a name that only
    repeats the id (digits' class ``0`` is named ``0``) is shown once: ``0``, not ``0 0``.

    Args:
        key: the class id (the ``per_class`` key).
        entry: its ``per_class`` entry (``name``, optionally ``display_name``).
    """
    key, name, shown = str(key), str(entry["name"]), entry.get("display_name")
    words = [str(shown)] if shown and str(shown) not in (name, key) else []
    if name != key:
        words.append(f"({name})" if words else name)
    return " ".join([key, *words])


def _threat(report: Report) -> Block:
    """What was evaluated, on what, under which threat model."""
    stopped = ""
    if report.stopped_early:
        stopped = f" of {report.sequential['max_n']} (--sequential stopped once every gate was decided)"
    return paragraph(
        "Model ",
        code(report.model.get("arch")),
        f" ({report.model.get('path') or 'in memory'}), data ",
        code(report.data.get("source")),
        f", n = {report.n}" + stopped + f", {report.norm} ε = {format_eps(report.eps)}, suite ",
        code(report.suite),
        f", seed {report.seed}.",
    )


def _metrics(report: Report) -> list[Block]:
    """Clean, after each attack, robust: rate and interval, and the counts they were divided from when recorded."""
    counted = bool(correct_of(report.counts, "robust"))
    header = ["metric", "accuracy (95% interval)"] + (["correct / n"] if counted else [])
    numeric = (1, 2) if counted else (1,)
    rows = [
        [
            Span("clean"),
            f"{report.clean_accuracy:.2%} {span(report.interval('clean_accuracy'))}",
            correct_of(report.counts, "clean"),
        ]
    ]
    rows += [
        [f"after {name}", f"{acc:.2%} {span(report.interval(name))}", correct_of(report.counts, name)]
        for name, acc in report.attacks.items()
    ]
    rows.append(
        [
            bold("robust (worst case)"),
            spans(bold(f"{report.robust_accuracy:.2%}"), f" {span(report.interval('robust_accuracy'))}"),
            correct_of(report.counts, "robust"),
        ]
    )
    return [Heading(2, "Accuracy"), table(header, [row if counted else row[:2] for row in rows], numeric, names=(0,))]


def _notes(report: Report) -> list[Block]:
    """How the intervals were made, what a randomised model's numbers mean, and each recipe section's summary."""
    randomised = " (clean accuracy of a randomised model: its mean over draws taken as the proportion)."
    blocks: list[Block] = [
        paragraph(f"Intervals: 95% Wilson score over n = {report.n}" + (randomised if report.randomized else "."))
    ]
    if report.randomized:
        blocks.append(
            paragraph(
                f"The model is randomised: gradients are averaged over {report.eot_samples} EOT draws and a "
                f"point counts as robust only if it is correct on all {report.eot_samples} re-scoring draws."
            )
        )
    blocks += [
        paragraph(f"Note: {section['summary']}.")
        for section in report.extra.values()
        if isinstance(section, dict) and "summary" in section
    ]
    return blocks


def _sweep(report: Report, plot: bool) -> list[Block]:
    """``--eps-sweep``: robust accuracy at each ε, and the curve when it was drawn."""
    if not report.eps_sweep:
        return []
    blocks: list[Block] = [
        Heading(2, "Accuracy vs ε"),
        table(
            ["ε", "robust accuracy"],
            [[format_eps(s["eps"]), f"{s['robust_accuracy']:.2%}"] for s in report.eps_sweep],
            numeric=(0, 1),
        ),
    ]
    if plot:
        blocks.append(Image("accuracy vs eps", "plot"))
    return blocks


def _work(report: Report) -> list[Block]:
    """What each attack cost and broke (the evidence behind a speed claim)."""
    if not report.work:
        return []
    rows = [
        [
            name,
            f"{w['seconds']:.1f}",
            f"{w['forward_passes']:,}",
            f"{w['backward_passes']:,}",
            w["attacked"],
            w["broken"],
        ]
        for name, w in report.work.items()
    ]
    return [
        Heading(2, "Work per attack"),
        table(
            ["attack", "seconds", "forward passes", "backward passes", "attacked", "broken"],
            rows,
            numeric=(1, 2, 3, 4, 5),
            names=(0,),
        ),
        paragraph(
            "Image-passes (a batch of 46 images is 46; each EOT draw counts), the re-scoring of every attacked "
            "point included."
        ),
    ]


def _checks_and_gates(report: Report) -> list[Block]:
    def result(check: Any) -> Any:
        if check.passed:
            return "pass"
        return "FAIL (accepted)" if check.name in report.accepted_checks else bold("FAIL")

    blocks: list[Block] = [
        Heading(2, "Checks"),
        table(["check", "result", "detail"], [[c.name, result(c), c.detail] for c in report.checks], names=(0, 1)),
    ]
    if report.accepted_checks:
        accepted = ", ".join(report.accepted_checks)
        blocks.append(paragraph(f"Failed checks accepted knowingly (--allow-check / --no-strict): {accepted}."))
    if report.gates:
        blocks += [Heading(2, "Gates"), gates_table(report.gates, "threshold", "value")]
    return blocks


def gates_table(gates: list[Any], threshold: str, value: str) -> Block:
    """The gates, one row each: threshold, value, what was compared, the result (FAIL in bold).

    Args:
        gates: the gates.
        threshold: the threshold column's title (a comparison's is "max drop").
        value: the value column's title (a comparison's is "drop").
    """
    return table(
        ["gate", threshold, value, "compared", "result"],
        [
            [
                g.name,
                f"{g.threshold:.4f}",
                f"{g.value:.4f}",
                GATE_BASIS.get(g.basis, g.basis or ""),
                "pass" if g.passed else bold("FAIL"),
            ]
            for g in gates
        ],
        numeric=(1, 2),
        names=(0, 3, 4),
    )


def _protected(report: Report) -> list[Block]:
    protected = report.extra.get("protected")
    if not protected:
        return []
    clean, robust = (
        ("n/a" if v is None else f"{v:.2%} {span(report.interval('protected_' + key))}")
        for key, v in (
            ("clean_accuracy", protected["clean_accuracy"]),
            ("robust_accuracy", protected["robust_accuracy"]),
        )
    )
    return [
        Heading(2, "Protected classes"),
        paragraph(
            f"Classes {', '.join(map(str, protected['classes']))} (cost {protected['cost']:g}), n = {protected['n']}: "
            f"clean {clean}, robust {robust}; cost-weighted robust error {protected['cost_weighted_robust_error']:.4f}."
        ),
    ]


def _per_class(report: Report) -> list[Block]:
    rows = [
        [
            class_label(key, entry),
            entry["n"],
            f"{entry['clean_accuracy']:.2%} {span(class_interval(entry, 'clean_accuracy'))}",
            f"{entry['robust_accuracy']:.2%} {span(class_interval(entry, 'robust_accuracy'))}",
        ]
        for key, entry in report.per_class.items()
    ]
    return [Heading(2, "Per class"), table(["class", "n", "clean", "robust"], rows, numeric=(1, 2, 3))]


def _provenance(report: Report) -> Block:
    """What the numbers rest on: the normalisation, the model's and the data's hashes, the run and the versions."""
    return paragraph(
        f"Normalisation from {report.normalization.get('source')}; model sha256 ",
        code(report.model_sha256),
        "; data sha256 ",
        code(report.data_sha256),
        f"; {report.seconds:.1f} s on {report.device}"
        + execution_text(report.execution)
        + "; "
        + ", ".join(f"{k} {v}" for k, v in report.versions.items())
        + ".",
    )
