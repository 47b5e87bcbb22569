"""The HTML report and the compare page as a person sees them: rendered by a real headless Chromium, offline, on a
phone, a desktop and for print. Screenshots land in ``$HARDENCTL_SCREENSHOTS`` when set (README's pictures,
docs/report.png and docs/compare.png, are the 1100 px ones from there)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from browser import DESKTOP, PHONE, chromium, view

from hardenctl.compare import Comparison
from hardenctl.gates import drop_gates
from hardenctl.report import Check, Gate, Report, comparison_html, render_html

pytestmark = pytest.mark.slow


def run(*args) -> tuple[int, str, str]:
    """The CLI in-process (exit code only; output is not captured here)."""
    from hardenctl.cli import main

    return main([str(a) for a in args]), "", ""


@pytest.fixture(scope="module")
def html_report(digits_model_path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("browser")
    code, _, _ = run(
        "eval",
        digits_model_path,
        "--data",
        "digits-test",
        "--n",
        "48",
        "--suite",
        "quick",
        "--eps",
        "0.1",
        "--eps-sweep",
        "0,0.05,0.1,0.2",
        "--html",
        out / "report.html",
        "--markdown",
        out / "report.md",
        "--report",
        out / "report.json",
        "--pictures",
        "6",
        "--min-robust-acc",
        "0.1",
        "--quiet",
    )
    assert code == 0
    return out / "report.html"


@pytest.fixture(scope="module")
def compare_page(digits_model_path, tmp_path_factory) -> Path:
    """``hardenctl compare old.json new.json --max-drop 0.01``, run where the reports are, so they are named as a
    reviewer would name them."""
    out = tmp_path_factory.mktemp("compare")
    args = ["--data", "digits-test", "--n", "40", "--suite", "quick", "--eps", "0.1", "--quiet"]
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(out)
        for name, seed_args in (("old", []), ("new", ["--seed", "1"])):
            code, _, _ = run(
                "eval",
                digits_model_path,
                *args,
                *seed_args,
                "--report",
                f"{name}.json",
                "--samples",
                f"{name}.samples.jsonl",
            )
            assert code == 0
        assert run("compare", "old.json", "new.json", "--max-drop", "0.01", "--html", "compare.html", "--quiet")[0] == 0
    return out / "compare.html"


# ImageNet-style classes with long names (one a single long token), many attacks: tables a phone cannot fit
NAMES = [
    "Samoyed, Samoyede",
    "Old English sheepdog, bobtail",
    "dingo, warrigal, warragal, Canis dingo",
    "Rhodesian ridgeback",
    "Dandie Dinmont, Dandie Dinmont terrier",
    "Pembroke_Welsh_Corgi_from_a_folder_with_a_long_name",
    "golden retriever",
    "Great Pyrenees",
    "English foxhound",
    "Australian terrier",
    "Shih-Tzu",
    "beagle",
]
BASELINE = "releases/v1.4.0/imagewoof-val-4of255"
ATTACKS = ["fgsm", "pgd", "apgd-ce", "apgd-t", "fab-t", "square", "apgd-dlr"]
CHECKS = [
    "perturbations_in_bounds",
    "input_gradients_nonzero",
    "eot_used_for_randomized_model",
    "robust_accuracy_non_increasing_in_eps",
    "near_zero_accuracy_at_large_eps",
    "eval_mode_and_buffers_unchanged",
]


def wide_report(robust: float) -> Report:
    """A 1,000-sample ImageNet-style report at 4/255: every section present, one check failing, two gates failing."""
    n = 1000
    attacks = {name: round(robust + 0.3 * (len(ATTACKS) - 1 - i) / len(ATTACKS), 3) for i, name in enumerate(ATTACKS)}
    per_class = {
        str(i): {
            "name": f"n0{2085620 + 1117 * i}",
            "display_name": name,
            "n": 83 + i % 3,
            "clean_accuracy": 0.6 + 0.03 * (i % 10),
            "robust_accuracy": max(0.0, robust - 0.1 + 0.02 * i),
        }
        for i, name in enumerate(NAMES)
    }
    regressed = [
        {
            "index": 100 + 37 * i,
            "source_id": f"val/n0{2085620 + 1117 * i}/ILSVRC2012_val_000{12345 + i}.JPEG",
            "label": i,
            "adversarial_prediction": (i + 3) % 12,
            "broken_by": ATTACKS[i % 7],
        }
        for i in range(8)
    ]
    paired = {
        "n": n,
        "baseline": f"{BASELINE}.json",
        "baseline_samples": f"{BASELINE}.samples.jsonl",
        "robust": {"regressed": 37, "improved": 12, "difference": 0.025, "mcnemar_p": 0.000377},
        "clean": {"regressed": 1, "improved": 4, "difference": -0.003, "mcnemar_p": 0.375},
        "regressed_samples": regressed,
    }
    protected = {
        "classes": [3, 7],
        "cost": 10.0,
        "n": 170,
        "clean_accuracy": 0.82,
        "robust_accuracy": 0.41,
        "cost_weighted_robust_error": 0.3412,
    }
    checks = [
        Check(
            name,
            name != "near_zero_accuracy_at_large_eps",
            f"{name.replace('_', ' ')}: measured on 1,000 "
            "samples with the suite's strongest attack, compared with its limit",
        )
        for name in CHECKS
    ]
    gates = [
        Gate("min_clean_acc", 0.7, 0.8237, True, "lower95"),
        Gate("min_robust_acc", 0.4, robust - 0.03, False, "lower95"),
        Gate("max_drop_robust_accuracy", 0.01, 0.025, False, "paired"),
        Gate("sanity_checks", 0, 1, False),
    ]
    work = {
        name: {
            "seconds": 612.5 + i,
            "forward_passes": 12_345_678 + i,
            "backward_passes": 11_000_000 + i,
            "attacked": 1000,
            "broken": 123 + i,
        }
        for i, name in enumerate(ATTACKS)
    }
    counts = {
        "n": n,
        "clean_correct": 851,
        "robust_correct": round(robust * n),
        "attacks": {name: round(value * n) for name, value in attacks.items()},
    }
    return Report(
        schema_version="1.0",
        clean_accuracy=0.851,
        robust_accuracy=robust,
        attacks=attacks,
        per_class=per_class,
        n=n,
        eps=4 / 255,
        norm="linf",
        suite="standard",
        seed=0,
        model_sha256="3f" * 32,
        data_sha256="a9" * 32,
        versions={"hardenctl": "0.1.0", "torch": "2.14.1", "timm": "1.0.31", "python": "3.11.7"},
        normalization={"source": "checkpoint"},
        seconds=5123.4,
        checks=checks,
        gates=gates,
        attack_list=ATTACKS,
        model={
            "arch": "vit_base_patch16_224.augreg2_in21k_ft_in1k",
            "path": "checkpoints/vit_base_patch16_224/model.safetensors",
        },
        data={"source": "imagewoof2-320/val"},
        device="cuda",
        gate_on="lower",
        eps_sweep=[{"eps": k / 255, "robust_accuracy": max(0.0, 0.851 - 0.12 * k)} for k in (0, 1, 2, 4, 8, 16)],
        extra={"paired": paired, "protected": protected},
        counts=counts,
        work=work,
        execution={"batch_size": 256, "batch_size_auto": True, "search_precision": "bf16"},
    )


@pytest.fixture(scope="module")
def wide_pages(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("wide")
    old, new = wide_report(0.412), wide_report(0.387)
    (out / "report.html").write_text(render_html(new))
    comparison = Comparison(
        old,
        new,
        f"{BASELINE}.json",
        "candidate/imagewoof-val-4of255.json",
        paired=new.extra["paired"],
        gates=drop_gates(new, old, 0.01, new.extra["paired"]),
    )
    (out / "compare.html").write_text(comparison_html(comparison))
    return {"wide report": out / "report.html", "wide compare": out / "compare.html"}


@pytest.fixture(scope="module")
def pages(html_report, compare_page, wide_pages) -> dict[str, Path]:
    return {"report": html_report, "compare": compare_page, **wide_pages}


# what each page's banner must say: its outcome, the gates that decided it, and key numbers
VERDICTS = {
    "report": ["PASS", "min_robust_acc", "16.67% ≥ 10.00%", "48", "linf ε"],
    "compare": ["PASS", "max_drop_robust_accuracy", "max_drop_clean_accuracy", "+0.00 pts"],
    "wide report": [
        "FAIL",
        "min_robust_acc",
        "max_drop_robust_accuracy",
        "sanity_checks",
        "near_zero_accuracy_at_large_eps",
        "4/255 (0.015686)",
        "85.10% (82.8–87.2)",
    ],
    "wide compare": ["FAIL", "max_drop_robust_accuracy", "-2.50 pts", "41.20% → 38.70%", "37 / 12", "0.000377"],
}


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
    assert (
        metrics[0] == "clean" and metrics[-1].startswith("robust") and len(metrics) == 4
    )  # clean, pgd, apgd-ce, robust
    per_class = next(t for t in page.tables if t[0][0] == "class")
    assert [row[0] for row in per_class[1:]] == [str(digit) for digit in range(10)]  # "0", not "0 0": name = id
    sweep = next(t for t in page.tables if t[0][0] == "ε")
    assert [row[0] for row in sweep[1:]] == ["0", "0.05", "0.1", "0.2"]


def test_a_narrow_screen_does_not_scroll_sideways(html_report, tmp_path):
    page = view(html_report, screenshot=screenshot_path(tmp_path, "report-narrow.png"), width=380, phone=True)
    assert not page.overflows and page.console_errors == []


def test_it_prints(html_report, tmp_path):
    page = view(html_report, media="print")
    assert page.console_errors == [] and all(i["naturalWidth"] > 0 for i in page.images)


def test_the_compare_page_renders_with_both_columns_and_the_paired_test(compare_page, tmp_path):
    page = view(compare_page, screenshot=screenshot_path(tmp_path, "compare.png"))
    assert page.console_errors == [] and page.failed_requests == []
    metrics = next(t for t in page.tables if t[0][0] == "metric")
    assert len(metrics[0]) == 4 and [row[0] for row in metrics[1:]] == [
        "clean",
        "after pgd",
        "after apgd-ce",
        "robust (worst case)",
    ]
    assert all(row[3].endswith(" pts") for row in metrics[1:])  # a change in points, never "%"
    per_class = next(t for t in page.tables if t[0][0] == "class")
    assert len(per_class) == 11 and "McNemar" in page.text and "Same 40 samples as old.json" in page.text


@pytest.mark.parametrize("size", [PHONE, DESKTOP], ids=["phone", "desktop"])
@pytest.mark.parametrize("name", list(VERDICTS))
def test_numbers_stay_on_one_line_and_the_verdict_is_on_the_first_screen(pages, name, size, tmp_path):
    width, height = size
    slug = name.replace(" ", "-") + ("-phone" if size == PHONE else "-desktop")
    page = view(
        pages[name],
        screenshot=screenshot_path(tmp_path, f"{slug}.png"),
        width=width,
        height=height,
        phone=size == PHONE,
    )
    assert page.console_errors == [] and not page.overflows  # wide tables scroll in their box, never the page
    assert len(page.numeric_cells) >= 30
    assert [cell["text"] for cell in page.numeric_cells if cell["lines"] != 1] == []
    assert page.code_words and [word["text"] for word in page.code_words if word["lines"] != 1] == []  # no "sta/ndard"
    assert page.verdict is not None and 0 <= page.verdict["top"] < page.verdict["bottom"] <= height
    assert [word for word in VERDICTS[name] if word not in page.verdict["text"]] == []
    assert [box["heading"] for box in page.table_boxes if not box["heading"]] == []  # a heading right above every table


@pytest.mark.parametrize("name", ["wide report", "wide compare"])
def test_a_table_wider_than_a_phone_scrolls_with_a_shadow_on_the_side_that_has_more(pages, name):
    page = view(pages[name], width=PHONE[0], height=PHONE[1], phone=True)
    wide = [box for box in page.table_boxes if box["overflows"]]
    fitting = [box for box in page.table_boxes if not box["overflows"]]
    assert len(wide) >= 2 and fitting
    for box in wide:  # at the start the shadow is on the right; scrolled to the end, on the left
        assert box["scrolls"] and box["shade_right"] > 40 and box["shade_left"] < 8, box
        assert box["end_left"] > 40 and box["end_right"] < 8, box
    for box in fitting:  # a table that fits shows none
        assert max(box["shade_left"], box["shade_right"], box["end_left"], box["end_right"]) < 8, box


def outcome_of(call) -> BaseException | None:
    """The exception (a skip and a failure included) that ``call`` ended with, None when it returned."""
    try:
        call()
    except BaseException as exc:  # noqa: BLE001 - pytest's skip and fail are BaseExceptions
        return exc
    return None


def test_without_chromium_the_browser_tests_skip_saying_how_to_install_or_fail_when_required(monkeypatch, tmp_path):
    monkeypatch.setenv("HARDENCTL_CHROMIUM", str(tmp_path / "no-chromium-here"))
    monkeypatch.delenv("HARDENCTL_REQUIRE_TOOLS", raising=False)
    skipped = outcome_of(chromium)
    assert isinstance(skipped, pytest.skip.Exception) and "apt-get install chromium" in str(skipped)
    monkeypatch.setenv("HARDENCTL_REQUIRE_TOOLS", "1")
    failed = outcome_of(chromium)
    assert isinstance(failed, pytest.fail.Exception) and "HARDENCTL_REQUIRE_TOOLS=1" in str(failed)


def test_without_playwright_the_browser_tests_fail_when_tools_are_required(monkeypatch):
    monkeypatch.setitem(sys.modules, "playwright.sync_api", None)  # import raises ImportError
    monkeypatch.setenv("HARDENCTL_REQUIRE_TOOLS", "1")
    failed = outcome_of(chromium)
    assert isinstance(failed, pytest.fail.Exception) and "pip install -e '.[dev]'" in str(failed)
    monkeypatch.delenv("HARDENCTL_REQUIRE_TOOLS")
    assert isinstance(outcome_of(chromium), pytest.skip.Exception)
