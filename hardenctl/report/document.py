"""What the Markdown and HTML reports say, as blocks of literal text; each renderer spells it in its own syntax.

Every piece of text here is literal (a class name, a path, a template word alike): the Markdown renderer escapes it
for Markdown, the HTML renderer for HTML. Building the content once keeps the two reports' tables the same, row for
row, and means neither renderer parses the other's output (a name with ``|`` or ``**`` in it cannot change either).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

from .common import GATE_BASIS, class_interval, correct_of, format_eps, span

if TYPE_CHECKING:
    from .schema import Report


@dataclass(frozen=True)
class Span:
    """Literal text; ``style`` is "", "bold" or "code"."""

    text: str
    style: str = ""


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Paragraph:
    spans: tuple[Span, ...]


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[tuple[Span, ...], ...], ...]  # row → cell → spans


@dataclass(frozen=True)
class Image:
    alt: str
    target: str  # "plot" or "pictures": each renderer knows where its copy of the image is


Block = Union[Heading, Paragraph, Table, Image]


def bold(text: object) -> Span:
    return Span(str(text), "bold")


def code(text: object) -> Span:
    return Span(str(text), "code")


def spans(*parts: object) -> tuple[Span, ...]:
    """Spans from parts: a Span as it is, anything else as plain text."""
    return tuple(part if isinstance(part, Span) else Span(str(part)) for part in parts)


def paragraph(*parts: object) -> Paragraph:
    return Paragraph(spans(*parts))


def table(header: list[str], rows: list[list[Any]]) -> Table:
    """A table; a cell is a Span, a tuple of Spans, or anything else as plain text."""
    return Table(tuple(header), tuple(tuple(cell if isinstance(cell, tuple) else spans(cell) for cell in row) for row in rows))


def build(report: Report, plot: bool = False, pictures: bool = False) -> list[Block]:
    """The report's content; ``plot``/``pictures``: whether the accuracy-vs-ε curve and the pictures are shown."""
    blocks: list[Block] = [
        Heading(1, "hardenctl robustness report"),
        paragraph("Model ", code(report.model.get("arch")), f" ({report.model.get('path') or 'in memory'}), data ",
                  code(report.data.get("source")), f", n = {report.n}, {report.norm} ε = {format_eps(report.eps)}, suite ",
                  code(report.suite), f", seed {report.seed}."),
    ]
    blocks += _metrics(report)
    blocks.append(paragraph(f"Intervals: 95% Wilson score over n = {report.n}"
                            + (" (clean accuracy of a randomised model: its mean over draws taken as the proportion)."
                               if report.randomized else ".")))
    if report.randomized:
        blocks.append(paragraph(f"The model is randomised: gradients are averaged over {report.eot_samples} EOT draws and a "
                                f"point counts as robust only if it is correct on all {report.eot_samples} re-scoring draws."))
    blocks += [paragraph(f"Note: {section['summary']}.") for section in report.extra.values()
               if isinstance(section, dict) and "summary" in section]
    if report.eps_sweep:
        blocks += [Heading(2, "Accuracy vs ε"),
                   table(["ε", "robust accuracy"], [[format_eps(s["eps"]), f"{s['robust_accuracy']:.2%}"] for s in report.eps_sweep])]
        if plot:
            blocks.append(Image("accuracy vs eps", "plot"))
    if pictures:
        blocks += [Heading(2, "Adversarial examples"), Image("clean, adversarial and amplified perturbation", "pictures")]
    if report.work:
        blocks += [Heading(2, "Work per attack"),
                   table(["attack", "seconds", "forward passes", "backward passes", "attacked", "broken"],
                         [[name, f"{w['seconds']:.1f}", f"{w['forward_passes']:,}", f"{w['backward_passes']:,}", w["attacked"],
                           w["broken"]] for name, w in report.work.items()]),
                   paragraph("Image-passes (a batch of 46 images is 46; each EOT draw counts), the re-scoring of every attacked "
                             "point included.")]
    blocks += _checks_and_gates(report)
    blocks += paired_blocks(report.extra.get("paired"))
    blocks += _protected(report)
    blocks += [Heading(2, "Per class"),
               table(["class", "n", "clean", "robust"],
                     [[class_label(key, entry), entry["n"],
                       f"{entry['clean_accuracy']:.2%} {span(class_interval(entry, 'clean_accuracy'))}",
                       f"{entry['robust_accuracy']:.2%} {span(class_interval(entry, 'robust_accuracy'))}"]
                      for key, entry in report.per_class.items()])]
    blocks.append(paragraph(f"Normalisation from {report.normalization.get('source')}; model sha256 ", code(report.model_sha256),
                            "; data sha256 ", code(report.data_sha256), f"; {report.seconds:.1f} s on {report.device}"
                            + execution_text(report.execution) + "; "
                            + ", ".join(f"{k} {v}" for k, v in report.versions.items()) + "."))
    return blocks


def execution_text(execution: dict[str, Any]) -> str:
    """``, batch 200 (auto), attacks searched in bf16, every verdict re-scored in fp32`` (empty for older reports)."""
    if not execution:
        return ""
    auto = " (auto)" if execution.get("batch_size_auto") else ""
    text = f", batch {execution.get('batch_size')}{auto}"
    if execution.get("search_precision") == "bf16":
        return text + ", attacks searched in bf16 autocast, every verdict re-scored in fp32"
    return text + ", attacks in fp32"


def class_label(key: str, entry: dict[str, Any]) -> str:
    """``8 Samoyed (n02111889)`` where the data gave a name people know, else ``8 n02111889``."""
    shown = entry.get("display_name")
    return f"{key} {shown} ({entry['name']})" if shown else f"{key} {entry['name']}"


def _metrics(report: Report) -> list[Block]:
    """Clean, after each attack, robust: rate and interval, and the counts they were divided from when recorded."""
    counted = bool(correct_of(report.counts, "robust"))
    header = ["metric", "accuracy (95% interval)"] + (["correct / n"] if counted else [])
    rows = [[Span("clean"), f"{report.clean_accuracy:.2%} {span(report.interval('clean_accuracy'))}", correct_of(report.counts, "clean")]]
    rows += [[f"after {name}", f"{acc:.2%} {span(report.interval(name))}", correct_of(report.counts, name)]
             for name, acc in report.attacks.items()]
    rows.append([bold("robust (worst case)"),
                 spans(bold(f"{report.robust_accuracy:.2%}"), f" {span(report.interval('robust_accuracy'))}"),
                 correct_of(report.counts, "robust")])
    return [table(header, [row if counted else row[:2] for row in rows])]


def _checks_and_gates(report: Report) -> list[Block]:
    def result(check: Any) -> Any:
        if check.passed:
            return "pass"
        return "FAIL (accepted)" if check.name in report.accepted_checks else bold("FAIL")

    blocks: list[Block] = [Heading(2, "Checks"),
                           table(["check", "result", "detail"], [[c.name, result(c), c.detail] for c in report.checks])]
    if report.accepted_checks:
        blocks.append(paragraph(f"Failed checks accepted knowingly (--allow-check / --no-strict): {', '.join(report.accepted_checks)}."))
    if report.gates:
        blocks += [Heading(2, "Gates"),
                   table(["gate", "threshold", "value", "compared", "result"],
                         [[g.name, f"{g.threshold:.4f}", f"{g.value:.4f}", GATE_BASIS.get(g.basis, g.basis or ""),
                           "pass" if g.passed else bold("FAIL")] for g in report.gates])]
    return blocks


def paired_blocks(paired: dict[str, Any] | None) -> list[Block]:
    """The paired comparison with the baseline (``extra.paired``): counts, McNemar p-value, the regressed samples."""
    if not paired:
        return []
    robust = paired["robust"]
    blocks: list[Block] = [
        Heading(2, "Paired comparison with the baseline"),
        paragraph(f"Same {paired['n']} samples as ", code(paired["baseline"]), " (per-sample results ",
                  code(paired["baseline_samples"]), "): ", bold(f"{robust['regressed']} regressed"),
                  f" (robust before, not now), {robust['improved']} improved; paired change in robust accuracy "
                  f"{0.0 - robust['difference']:+.2%}; exact McNemar p = {robust['mcnemar_p']:.4g}.")]
    clean = paired.get("clean")
    if clean:
        p = "" if clean.get("mcnemar_p") is None else f"; McNemar p = {clean['mcnemar_p']:.4g}"
        blocks.append(paragraph(f"Clean: {clean['regressed']} samples regressed (less often correct than before), "
                                f"{clean['improved']} improved; paired change {0.0 - clean['difference']:+.2%}{p}."))
    shown = paired.get("regressed_samples") or []
    if shown:
        blocks.append(table(["index", "source", "label", "adversarial prediction", "broken by"],
                            [[r["index"], r["source_id"], r["label"], r["adversarial_prediction"], r["broken_by"] or ""] for r in shown]))
        if robust["regressed"] > len(shown):
            blocks.append(paragraph(f"… and {robust['regressed'] - len(shown)} more ({robust['regressed']} regressed in all; "
                                    "every one is in the per-sample results, ", code("--samples"), ")."))
    return blocks


def _protected(report: Report) -> list[Block]:
    protected = report.extra.get("protected")
    if not protected:
        return []
    clean, robust = (("n/a" if v is None else f"{v:.2%} {span(report.interval('protected_' + key))}")
                     for key, v in (("clean_accuracy", protected["clean_accuracy"]), ("robust_accuracy", protected["robust_accuracy"])))
    return [Heading(2, "Protected classes"),
            paragraph(f"Classes {', '.join(map(str, protected['classes']))} (cost {protected['cost']:g}), n = {protected['n']}: "
                      f"clean {clean}, robust {robust}; cost-weighted robust error {protected['cost_weighted_robust_error']:.4f}.")]
