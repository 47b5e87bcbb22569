"""What the report and the compare page say (issue 27, item 7): the verdict first, counts that agree with their
noun, changes in points, a heading on every table, a class shown once when its name is its id."""

from __future__ import annotations

import re

import pytest

from hardenctl.compare import Comparison
from hardenctl.gates import drop_gates
from hardenctl.report import Check, Gate, Report, comparison_html, comparison_markdown, render_html, render_markdown
from hardenctl.report.blocks import Heading, Table, Verdict
from hardenctl.report.common import format_points, plural
from hardenctl.report.comparison import build_comparison
from hardenctl.report.document import build, class_label

SIGNED_PERCENT = re.compile(r"[+\-−]\d+(\.\d+)?%")  # "+49.00%": a difference spelled as a rate


def make_report(n: int = 100, robust: float = 0.4, **changes) -> Report:
    counts = {
        "n": n,
        "clean_correct": round(0.9 * n),
        "robust_correct": round(robust * n),
        "attacks": {"pgd": round(robust * n)},
    }
    values = dict(
        schema_version="1.0",
        clean_accuracy=0.9,
        robust_accuracy=robust,
        attacks={"pgd": robust},
        n=n,
        eps=0.1,
        norm="linf",
        suite="quick",
        seed=0,
        model_sha256="m" * 64,
        data_sha256="d" * 64,
        versions={},
        normalization={},
        seconds=1.0,
        counts=counts,
        per_class={"0": {"name": "0", "n": n, "clean_accuracy": 0.9, "robust_accuracy": robust}},
        checks=[Check("input_gradients_nonzero", True, "ok"), Check("perturbations_in_bounds", True, "ok")],
    )
    values.update(changes)
    return Report(**values)


def paired(n: int, regressed: int, improved: int, clean_regressed: int = 0) -> dict:
    rows = [
        {"index": i, "source_id": f"row {i}", "label": 0, "adversarial_prediction": 1, "broken_by": "pgd"}
        for i in range(regressed)
    ]
    return {
        "n": n,
        "baseline": "old.json",
        "baseline_samples": "old.samples.jsonl",
        "regressed_samples": rows,
        "robust": {
            "regressed": regressed,
            "improved": improved,
            "difference": (regressed - improved) / n,
            "mcnemar_p": 0.5,
        },
        "clean": {"regressed": clean_regressed, "improved": 0, "difference": clean_regressed / n, "mcnemar_p": 1.0},
    }


def comparison(old: Report, new: Report, max_drop: float | None = None, pairs: dict | None = None) -> Comparison:
    gates = drop_gates(new, old, max_drop, pairs) if max_drop is not None else []
    return Comparison(old, new, "old.json", "new.json", paired=pairs, gates=gates)


def test_counts_agree_with_their_noun():
    assert [plural(k, "sample") for k in (0, 1, 2)] == ["0 samples", "1 sample", "2 samples"]
    assert plural(1, "class", "classes") == "1 class" and plural(3, "class", "classes") == "3 classes"
    one = comparison(
        make_report(n=1, robust=1.0), make_report(n=1, robust=0.0), pairs=paired(1, 1, 0, clean_regressed=1)
    )
    text = comparison_markdown(one)
    assert "the same 1 sample of" in text and "Same 1 sample as" in text and "Clean: 1 sample regressed" in text
    assert not re.search(r"\b1 samples\b", text + comparison_html(one))


def test_a_change_between_rates_is_in_points_never_a_percent():
    assert [format_points(change) for change in (0.49, -0.025, -1e-17)] == ["+49.00 pts", "-2.50 pts", "+0.00 pts"]
    old, new = make_report(robust=0.2), make_report(robust=0.69)
    pairs = {**paired(100, 0, 49), "clean": {"regressed": 0, "improved": 3, "difference": -0.03, "mcnemar_p": 0.25}}
    text = comparison_markdown(comparison(old, new, pairs=pairs))
    assert "paired change in robust accuracy +49.00 pts" in text and "paired change +3.00 pts" in text
    assert SIGNED_PERCENT.findall(text) == []
    report = make_report(extra={"paired": pairs})
    assert SIGNED_PERCENT.findall(render_markdown(report) + render_html(report)) == []


def test_a_class_is_shown_once_when_its_name_is_its_id():
    assert class_label("0", {"name": "0"}) == "0"  # digits: not "0 0"
    assert class_label("3", {"name": "cat"}) == "3 cat"
    assert class_label("8", {"name": "n02111889", "display_name": "Samoyed"}) == "8 Samoyed (n02111889)"
    assert class_label("0", {"name": "0", "display_name": "zero"}) == "0 zero"
    assert class_label("8", {"name": "n02111889", "display_name": "n02111889"}) == "8 n02111889"
    old, new = make_report(), make_report(robust=0.3)
    assert "| 0 | 100 |" in comparison_markdown(comparison(old, new)) and "| 0 | 100 |" in render_markdown(new)


def blocks_of_both() -> dict[str, list]:
    old, new = make_report(robust=0.5), make_report(robust=0.4, extra={"paired": paired(100, 12, 2)})
    work = {"pgd": {"seconds": 1.0, "forward_passes": 10, "backward_passes": 10, "attacked": 90, "broken": 50}}
    gates = [Gate("min_robust_acc", 0.5, 0.4, False, "point"), Gate("sanity_checks", 0, 0, True)]
    gated = make_report(
        robust=0.4,
        gates=gates,
        eps_sweep=[{"eps": 0.0, "robust_accuracy": 0.9}],
        work=work,
        extra={"paired": paired(100, 12, 2)},
    )
    return {"report": build(gated), "compare": build_comparison(comparison(old, new, 0.01, new.extra["paired"]))}


@pytest.mark.parametrize("page", ["report", "compare"])
def test_every_table_has_a_heading_right_above_it_the_regressed_samples_included(page):
    blocks = blocks_of_both()[page]
    tables = [i for i, block in enumerate(blocks) if isinstance(block, Table)]
    assert len(tables) >= 4
    assert [blocks[i].header[0] for i in tables if not isinstance(blocks[i - 1], Heading)] == []
    regressed = next(i for i in tables if blocks[i].header[0] == "index")
    assert blocks[regressed - 1].text.startswith("Regressed samples")


def verdict_line(markdown: str) -> str:
    """The Markdown's verdict: the first paragraph after the title."""
    return markdown.split("\n\n")[1]


@pytest.mark.parametrize(
    "gates, outcome, words",
    [
        ([], "NO GATES SET", ["no threshold", "sanity checks: all 2 pass"]),
        ([Gate("sanity_checks", 0, 0, True)], "NO GATES SET", ["no threshold", "sanity checks: all 2 pass"]),
        (
            [Gate("min_robust_acc", 0.3, 0.4, True, "point"), Gate("sanity_checks", 0, 0, True)],
            "PASS",
            ["all 2 gates passed", "min_robust_acc: 40.00% ≥ 30.00%"],
        ),
        (
            [Gate("min_robust_acc", 0.5, 0.3571, False, "lower95"), Gate("sanity_checks", 0, 1, False)],
            "FAIL",
            [
                "2 of 2 gates failed",
                "min_robust_acc: 95% lower bound 35.71% \\< 50.00%",
                "sanity_checks: input_gradients_nonzero failed",
            ],
        ),
    ],
)
def test_the_verdict_comes_first_and_says_pass_fail_or_that_no_gate_was_set(gates, outcome, words):
    failing = gates and not gates[-1].passed
    report = make_report(
        gates=gates,
        checks=[
            Check("input_gradients_nonzero", not failing, "zero gradients"),
            Check("perturbations_in_bounds", True, "ok"),
        ],
    )
    markdown = render_markdown(report)
    line = verdict_line(markdown)
    assert line.startswith(f"**{outcome}** · ") and "\n" not in line
    figures = [
        "clean accuracy: 90.00% (82.6–94.5)",
        "robust accuracy: 40.00% (30.9–49.8)",
        "n: 100",
        "linf ε: 0.1",
        "suite: quick",
    ]
    assert [word for word in words + figures if word not in line] == []
    assert outcome == "PASS" or "PASS" not in line
    page = render_html(report)
    style = {"PASS": "pass", "FAIL": "fail", "NO GATES SET": "none"}[outcome]
    assert page.index(f'class="verdict verdict-{style}"') < page.index("<p>Model ") < page.index("<table")


def test_failed_checks_accepted_knowingly_are_named_in_the_verdict():
    report = make_report(
        gates=[Gate("sanity_checks", 0, 0, True)],
        accepted_checks=["input_gradients_nonzero"],
        checks=[Check("input_gradients_nonzero", False, "zero gradients")],
    )
    line = verdict_line(render_markdown(report))
    assert line.startswith("**NO GATES SET**") and "input_gradients_nonzero failed, accepted knowingly" in line


def test_the_compare_verdict_names_the_failed_drop_gate_or_gives_the_headline_change():
    old, new = make_report(robust=0.5), make_report(robust=0.475, extra={})
    gated = verdict_line(comparison_markdown(comparison(old, new, 0.01)))
    assert gated.startswith(
        "**FAIL** · 1 of 2 gates failed · max_drop_robust_accuracy: -2.50 pts (between the two rates)"
    )
    assert "robust accuracy: 50.00% → 47.50% (-2.50 pts)" in gated and "max_drop_clean_accuracy" not in gated
    assert verdict_line(comparison_markdown(comparison(old, new, 0.05))).startswith("**PASS** · all 2 gates passed")
    ungated = verdict_line(comparison_markdown(comparison(old, new)))
    assert ungated.startswith("**NO GATES SET** · no --max-drop gate; robust accuracy -2.50 pts, clean +0.00 pts")
    page = comparison_html(comparison(old, new, 0.01))
    assert page.index('class="verdict verdict-fail"') < page.index("<table")


def test_the_verdict_escapes_names_in_both_renderers():
    failing = make_report(checks=[Check("input_gradients_nonzero", False, "x")])
    result = Comparison(failing, make_report(), "old | <b>x</b>.json", "new **bold**.json")
    line = verdict_line(comparison_markdown(result))
    assert "old \\| \\<b\\>x\\</b\\>.json: sanity checks failed" in line and "new \\*\\*bold\\*\\*.json" not in line
    page = comparison_html(result)
    assert "old | &lt;b&gt;x&lt;/b&gt;.json" in page and "<b>" not in page
    assert isinstance(build_comparison(result)[1], Verdict)
