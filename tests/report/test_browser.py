"""The HTML report as a person sees it: rendered by a real headless Chromium, offline, on a wide and a narrow
screen and for print. Screenshots land in ``$HARDENCTL_SCREENSHOTS`` when set (README's picture comes from there)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from browser import view

pytestmark = pytest.mark.slow


def run(*args) -> tuple[int, str, str]:
    """The CLI in-process (exit code only; output is not captured here)."""
    from hardenctl.cli import main

    return main([str(a) for a in args]), "", ""


@pytest.fixture(scope="module")
def html_report(digits_model_path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("browser")
    code, _, _ = run("eval", digits_model_path, "--data", "digits-test", "--n", "48", "--suite", "quick", "--eps", "0.1",
                         "--eps-sweep", "0,0.05,0.1,0.2", "--html", out / "report.html", "--markdown", out / "report.md",
                         "--report", out / "report.json", "--pictures", "6", "--quiet")
    assert code == 0
    return out / "report.html"


def screenshot_path(tmp_path: Path, name: str) -> Path:
    folder = os.environ.get("HARDENCTL_SCREENSHOTS")
    return Path(folder) / name if folder else tmp_path / name


def test_the_report_renders_offline_without_errors_and_every_picture_decodes(html_report, tmp_path):
    page = view(html_report, screenshot=screenshot_path(tmp_path, "report.png"))
    assert page.console_errors == [] and page.failed_requests == []
    assert len(page.images) == 2  # the pictures grid and the accuracy-vs-ε curve, embedded
    assert all(i["src"].startswith("data:image/png") and i["complete"] and i["naturalWidth"] > 100 for i in page.images)
    results = next(t for t in page.tables if t[0][0] == "metric")
    assert results[0] == ["metric", "accuracy (95% interval)", "correct / n"]
    metrics = [row[0] for row in results[1:]]
    assert metrics[0] == "clean" and metrics[-1].startswith("robust") and len(metrics) == 4  # clean, pgd, apgd-ce, robust
    per_class = next(t for t in page.tables if t[0][0] == "class")
    assert len(per_class) == 1 + 10  # a header and one row per digit
    sweep = next(t for t in page.tables if t[0][0] == "ε")
    assert [row[0] for row in sweep[1:]] == ["0", "0.05", "0.1", "0.2"]


def test_a_narrow_screen_does_not_scroll_sideways(html_report, tmp_path):
    page = view(html_report, screenshot=screenshot_path(tmp_path, "report-narrow.png"), width=380, phone=True)
    assert not page.overflows and page.console_errors == []


def test_it_prints(html_report, tmp_path):
    page = view(html_report, media="print")
    assert page.console_errors == [] and all(i["naturalWidth"] > 0 for i in page.images)


def test_the_compare_page_renders_with_both_columns_and_the_paired_test(digits_model_path, tmp_path):
    args = ["--data", "digits-test", "--n", "40", "--suite", "quick", "--eps", "0.1", "--quiet"]
    for name, eps_args in (("old", []), ("new", ["--seed", "1"])):
        assert run("eval", digits_model_path, *args, *eps_args, "--report", tmp_path / f"{name}.json",
                       "--samples", tmp_path / f"{name}.samples.jsonl")[0] == 0
    assert run("compare", tmp_path / "old.json", tmp_path / "new.json", "--html", tmp_path / "compare.html", "--quiet")[0] == 0
    page = view(tmp_path / "compare.html", screenshot=screenshot_path(tmp_path, "compare.png"))
    assert page.console_errors == [] and page.failed_requests == []
    metrics = next(t for t in page.tables if t[0][0] == "metric")
    assert len(metrics[0]) == 4 and [row[0] for row in metrics[1:]] == ["clean", "after pgd", "after apgd-ce", "robust (worst case)"]
    per_class = next(t for t in page.tables if t[0][0] == "class")
    assert len(per_class) == 11 and "McNemar" in page.text
