"""Counts beside rates (issue 19, item 8): every output says what a rate was divided from, the JSON keeps the counts,
and reports written before counts existed still load and render as they did."""

from __future__ import annotations

import json

from rich.console import Console

from hardenctl.report import Report, render_html, render_markdown, render_table, report_from_dict

COUNTS = {"n": 24, "clean_correct": 23, "robust_correct": 11, "attacks": {"fgsm": 15, "pgd": 11}}


def make_report(**changes) -> Report:
    values = dict(
        schema_version="1.0",
        clean_accuracy=23 / 24,
        robust_accuracy=11 / 24,
        attacks={"fgsm": 15 / 24, "pgd": 11 / 24},
        per_class={},
        n=24,
        eps=0.1,
        norm="linf",
        suite="quick",
        seed=0,
        model_sha256="m",
        data_sha256="d",
        versions={},
        normalization={},
        seconds=1.0,
        counts=COUNTS,
    )
    values.update(changes)
    return Report(**values)


def console_text(report: Report) -> str:
    console = Console(record=True, width=200, color_system=None)
    console.print(render_table(report))
    return console.export_text()


def test_counts_stand_beside_the_rates_in_every_output():
    report = make_report()
    markdown = render_markdown(report)
    assert "| metric | accuracy (95% interval) | correct / n |" in markdown
    assert (
        "| clean | 95.83% (79.8–99.3) | 23/24 |" in markdown
        and "| after fgsm | 62.50% (42.7–78.8) | 15/24 |" in markdown
    )
    assert "| **robust (worst case)** | **45.83%** (27.9–64.9) | 11/24 |" in markdown
    page = render_html(report)
    assert "<td>95.83% (79.8–99.3)</td><td>23/24</td>" in page and "<th>correct / n</th>" in page
    text = console_text(report)
    assert "correct / n" in text and all(f"{c}/24" in text for c in (23, 15, 11))


def test_a_randomised_models_clean_count_is_a_sum_of_fractions():
    report = make_report(clean_accuracy=22.5 / 24, randomized=True, counts={**COUNTS, "clean_correct": 22.5})
    assert "| clean | 93.75% (" in render_markdown(report) and "| 22.50/24 |" in render_markdown(report)


def test_the_json_keeps_the_counts():
    report = make_report()
    data = json.loads(report.to_json())
    assert data["counts"] == COUNTS
    assert report_from_dict(data).counts == COUNTS and report_from_dict(data) == report


def test_a_report_without_counts_loads_and_renders_as_before():
    data = json.loads(make_report().to_json())
    del data["counts"]
    old = report_from_dict(data)
    assert old.counts == {}
    markdown = render_markdown(old)
    assert "correct" not in markdown and "| clean | 95.83% (79.8–99.3) |\n" in markdown
    assert "correct" not in console_text(old) and "correct" not in render_html(old)
