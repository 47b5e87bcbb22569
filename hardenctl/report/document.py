"""What the Markdown and HTML reports say, as blocks of literal text; each renderer spells it in its own syntax.

Every piece of text here is literal (a class name, a path, a template word alike): the Markdown renderer escapes it
for Markdown, the HTML renderer for HTML. Building the content once keeps the two reports' tables the same, row for
row, and means neither renderer parses the other's output (a name with ``|`` or ``**`` in it cannot change either).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

from .common import GATE_BASIS, class_interval, correct_of, format_eps, format_points, plural, sequential_note, span

if TYPE_CHECKING:
    from .schema import Gate, Report


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
    numeric: tuple[int, ...] = ()  # columns of numbers: a renderer that wraps text must never break these
    names: tuple[int, ...] = ()  # columns of our own names (checks, gates, attacks): whole where there is room


@dataclass(frozen=True)
class Verdict:
    """The answer first: pass, fail or no gate set, why, and the numbers it rests on (a reader on a phone or in a
    GitHub step summary should not have to scroll to a table at the end to learn whether the model passed)."""

    outcome: str  # "pass", "fail" or "none" (no gate was set: nothing to pass or fail)
    label: str  # "PASS", "FAIL", "NO GATES SET"
    summary: str  # e.g. "2 of 3 gates failed"
    details: tuple[str, ...]  # one line per gate that decided it (or a note)
    figures: tuple[tuple[str, str], ...]  # (label, value): the key numbers


@dataclass(frozen=True)
class Image:
    alt: str
    target: str  # "plot" or "pictures": each renderer knows where its copy of the image is


Block = Union[Heading, Paragraph, Table, Image, Verdict]


def bold(text: object) -> Span:
    return Span(str(text), "bold")


def code(text: object) -> Span:
    return Span(str(text), "code")


def spans(*parts: object) -> tuple[Span, ...]:
    """Spans from parts: a Span as it is, anything else as plain text."""
    return tuple(part if isinstance(part, Span) else Span(str(part)) for part in parts)


def paragraph(*parts: object) -> Paragraph:
    return Paragraph(spans(*parts))


def table(
    header: list[str], rows: list[list[Any]], numeric: tuple[int, ...] = (), names: tuple[int, ...] = ()
) -> Table:
    """A table; a cell is a Span, a tuple of Spans, or anything else as plain text. ``numeric``: the columns that
    hold numbers, ``names``: those that hold hardenctl's names for things (0-based; never the data's class names)."""
    cells = tuple(tuple(cell if isinstance(cell, tuple) else spans(cell) for cell in row) for row in rows)
    return Table(tuple(header), cells, tuple(numeric), tuple(names))


def build(report: Report, plot: bool = False, pictures: bool = False) -> list[Block]:
    """The report's content; ``plot``/``pictures``: whether the accuracy-vs-ε curve and the pictures are shown."""
    blocks: list[Block] = [
        Heading(1, "hardenctl robustness report"),
        report_verdict(report),
        paragraph(
            "Model ",
            code(report.model.get("arch")),
            f" ({report.model.get('path') or 'in memory'}), data ",
            code(report.data.get("source")),
            f", n = {report.n}"
            + (
                f" of {report.sequential['max_n']} (--sequential stopped once every gate was decided)"
                if report.stopped_early
                else ""
            )
            + f", {report.norm} ε = {format_eps(report.eps)}, suite ",
            code(report.suite),
            f", seed {report.seed}.",
        ),
    ]
    blocks += _metrics(report)
    blocks.append(
        paragraph(
            f"Intervals: 95% Wilson score over n = {report.n}"
            + (
                " (clean accuracy of a randomised model: its mean over draws taken as the proportion)."
                if report.randomized
                else "."
            )
        )
    )
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
    if report.eps_sweep:
        blocks += [
            Heading(2, "Accuracy vs ε"),
            table(
                ["ε", "robust accuracy"],
                [[format_eps(s["eps"]), f"{s['robust_accuracy']:.2%}"] for s in report.eps_sweep],
                numeric=(0, 1),
            ),
        ]
        if plot:
            blocks.append(Image("accuracy vs eps", "plot"))
    if pictures:
        blocks += [
            Heading(2, "Adversarial examples"),
            Image("clean, adversarial and amplified perturbation", "pictures"),
        ]
    if report.work:
        blocks += [
            Heading(2, "Work per attack"),
            table(
                ["attack", "seconds", "forward passes", "backward passes", "attacked", "broken"],
                [
                    [
                        name,
                        f"{w['seconds']:.1f}",
                        f"{w['forward_passes']:,}",
                        f"{w['backward_passes']:,}",
                        w["attacked"],
                        w["broken"],
                    ]
                    for name, w in report.work.items()
                ],
                numeric=(1, 2, 3, 4, 5),
                names=(0,),
            ),
            paragraph(
                "Image-passes (a batch of 46 images is 46; each EOT draw counts), the re-scoring of every attacked "
                "point included."
            ),
        ]
    blocks += _checks_and_gates(report)
    blocks += _sequential(report)
    blocks += paired_blocks(report.extra.get("paired"))
    blocks += _protected(report)
    blocks += [
        Heading(2, "Per class"),
        table(
            ["class", "n", "clean", "robust"],
            [
                [
                    class_label(key, entry),
                    entry["n"],
                    f"{entry['clean_accuracy']:.2%} {span(class_interval(entry, 'clean_accuracy'))}",
                    f"{entry['robust_accuracy']:.2%} {span(class_interval(entry, 'robust_accuracy'))}",
                ]
                for key, entry in report.per_class.items()
            ],
            numeric=(1, 2, 3),
        ),
    ]
    blocks.append(
        paragraph(
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
    )
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
    """``8 Samoyed (n02111889)`` where the data gave a name people know, else ``8 n02111889``; a name that only
    repeats the id (digits' class ``0`` is named ``0``) is shown once: ``0``, not ``0 0``."""
    key, name, shown = str(key), str(entry["name"]), entry.get("display_name")
    words = [str(shown)] if shown and str(shown) not in (name, key) else []
    if name != key:
        words.append(f"({name})" if words else name)
    return " ".join([key, *words])


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
        blocks.append(
            paragraph(
                f"Failed checks accepted knowingly (--allow-check / --no-strict): {', '.join(report.accepted_checks)}."
            )
        )
    if report.gates:
        blocks += [
            Heading(2, "Gates"),
            table(
                ["gate", "threshold", "value", "compared", "result"],
                [
                    [
                        g.name,
                        f"{g.threshold:.4f}",
                        f"{g.value:.4f}",
                        GATE_BASIS.get(g.basis, g.basis or ""),
                        "pass" if g.passed else bold("FAIL"),
                    ]
                    for g in report.gates
                ],
                numeric=(1, 2),
                names=(0, 3, 4),
            ),
        ]
    return blocks


def _sequential(report: Report) -> list[Block]:
    """``--sequential``: where it stopped and why, each gate's decision, and every round's bounds."""
    section = report.sequential
    if not section:
        return []
    stopped = (
        f"stopped after {report.n:,} of {section['max_n']:,} images, every gate decided"
        if report.stopped_early
        else f"attacked all {section['max_n']:,} images (a gate was not decided earlier), gated as without --sequential"
    )
    gates = [
        [
            name,
            entry["decision"] or "undecided",
            f"{entry['decided_at']:,}" if entry.get("decided_at") else "–",
            span(entry["bounds"], brackets=False) if entry.get("bounds") else "–",
            f"{entry['threshold']:.4f}",
        ]
        for name, entry in section["gates"].items()
    ]
    quantities = list(section["method"])
    rounds = [
        [f"{entry['n']:,}"] + [span(entry[q], brackets=False) if q in entry else "–" for q in quantities]
        for entry in section["rounds"]
    ]
    return [
        Heading(2, "Sequential gates"),
        paragraph(
            f"The images were attacked in a seeded random order, round by round; {stopped}. Each gated quantity "
            "has an anytime-valid confidence sequence for the value the full run would measure, so the chance "
            f"that any early verdict differs from the full run's is at most α = {section['alpha']:g} "
            "(split over the quantities). Methods: "
            + "; ".join(f"{q.replace('_', ' ')}: {m}" for q, m in section["method"].items())
            + "."
        ),
        table(
            ["gate", "decision", "decided after", "bounds when decided", "threshold"],
            gates,
            numeric=(2, 3, 4),
            names=(0, 1),
        ),
        Heading(3, "Rounds"),
        table(
            ["images"] + [q.replace("_", " ") for q in quantities], rounds, numeric=tuple(range(len(quantities) + 1))
        ),
    ]


def paired_blocks(paired: dict[str, Any] | None) -> list[Block]:
    """The paired comparison with the baseline (``extra.paired``): counts, McNemar p-value, the regressed samples."""
    if not paired:
        return []
    robust = paired["robust"]
    blocks: list[Block] = [
        Heading(2, "Paired comparison with the baseline"),
        paragraph(
            f"Same {plural(paired['n'], 'sample')} as ",
            code(paired["baseline"]),
            " (per-sample results ",
            code(paired["baseline_samples"]),
            "): ",
            bold(f"{robust['regressed']} regressed"),
            f" (robust before, not now), {robust['improved']} improved; paired change in robust accuracy "
            f"{format_points(-robust['difference'])}; exact McNemar p = {robust['mcnemar_p']:.4g}.",
        ),
    ]
    clean = paired.get("clean")
    if clean:
        p = "" if clean.get("mcnemar_p") is None else f"; McNemar p = {clean['mcnemar_p']:.4g}"
        blocks.append(
            paragraph(
                f"Clean: {plural(clean['regressed'], 'sample')} regressed (less often correct than "
                f"before), {clean['improved']} improved; paired change "
                f"{format_points(-clean['difference'])}{p}."
            )
        )
    shown = paired.get("regressed_samples") or []
    if shown:
        blocks += [
            Heading(3, "Regressed samples (robust in the baseline, not now)"),
            table(
                ["index", "source", "label", "adversarial prediction", "broken by"],
                [
                    [r["index"], r["source_id"], r["label"], r["adversarial_prediction"], r["broken_by"] or ""]
                    for r in shown
                ],
                numeric=(0, 2, 3),
                names=(4,),
            ),
        ]
        if robust["regressed"] > len(shown):
            blocks.append(
                paragraph(
                    f"… and {robust['regressed'] - len(shown)} more ({robust['regressed']} regressed in all; "
                    "every one is in the per-sample results, ",
                    code("--samples"),
                    ").",
                )
            )
    return blocks


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


_DROP_BASIS = {"paired": "paired, per sample", "rates": "between the two rates"}


def gate_line(gate: Gate, failing_checks: list[str], report: Report | None = None) -> str:
    """One gate as a reader checks it: ``min_robust_acc: 16.67% < 50.00%``, ``max_drop_robust_accuracy: -2.50 pts
    (paired, per sample); may fall at most 1.00 pts``, ``sanity_checks: a, b failed``; a sequential run's gate names
    the bound that decided it and after how many images."""
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
    (which every evaluation gets) or none was set: a run with no threshold did not pass anything."""
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


def checks_note(report: Report) -> str:
    """What the sanity checks said, for the verdict: all passed, some failed but accepted, or failed (ungated)."""
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
    """The report's banner: its gates' outcome and the numbers a reader wants first."""
    evaluated = f"{report.n} of {report.sequential['max_n']} (sequential)" if report.stopped_early else str(report.n)
    figures = (
        ("clean accuracy", f"{report.clean_accuracy:.2%} {span(report.interval('clean_accuracy'))}"),
        ("robust accuracy", f"{report.robust_accuracy:.2%} {span(report.interval('robust_accuracy'))}"),
        ("n", evaluated),
        (f"{report.norm} ε", format_eps(report.eps)),
        ("suite", str(report.suite)),
    )
    failing = list(dict.fromkeys(c.name for c in report.failed_checks if c.name not in report.accepted_checks))
    note = checks_note(report)
    gated_checks = any(g.name == "sanity_checks" and not g.passed for g in report.gates)
    return gates_verdict(
        report.gates,
        failing,
        figures,
        "no threshold to pass or fail (set --min-robust-acc, --min-clean-acc or --baseline with --max-drop)",
        () if gated_checks else (note,),
        report,
    )
