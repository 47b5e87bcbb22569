"""`hardenctl eval --protected`: protected-class metrics in the report and the --min-protected-robust-acc gate."""

from __future__ import annotations

import torch
from testing_helpers import read_json

FAST = ("--suite", "quick", "--apgd-steps", "10", "--n", "48", "--batch-size", "32", "--quiet")


def test_protected_metrics_and_gate(cli, digits_model_path, tmp_path):
    code, _, err = cli(
        "eval",
        digits_model_path,
        "--data",
        "digits-test",
        *FAST,
        "--protected",
        "3,5",
        "--min-protected-robust-acc",
        "1.0",
        "--report",
        tmp_path / "r.json",
        "--markdown",
        tmp_path / "r.md",
    )
    assert code == 1 and "gate failed: min_protected_robust_acc" in err
    report = read_json(tmp_path / "r.json")
    protected = report["extra"]["protected"]
    per_class = report["per_class"]
    n = sum(per_class[c]["n"] for c in ("3", "5") if c in per_class)
    assert protected["classes"] == [3, 5] and protected["n"] == n > 0 and protected["cost"] == 10
    robust = sum(per_class[c]["robust_accuracy"] * per_class[c]["n"] for c in ("3", "5") if c in per_class) / n
    assert abs(protected["robust_accuracy"] - robust) < 1e-6
    assert 0 <= protected["cost_weighted_robust_error"] <= 10
    assert "## Protected classes" in (tmp_path / "r.md").read_text()
    gate = {g["name"]: g for g in report["gates"]}["min_protected_robust_acc"]
    assert not gate["passed"] and gate["value"] == protected["robust_accuracy"]
    assert (
        cli(
            "eval",
            digits_model_path,
            "--data",
            "digits-test",
            *FAST,
            "--protected",
            "3,5",
            "--min-protected-robust-acc",
            "0",
        )[0]
        == 0
    )


def test_protected_usage_errors(cli, digits_model_path):
    code, _, err = cli("eval", digits_model_path, "--data", "digits-test", *FAST, "--min-protected-robust-acc", "0.5")
    assert code == 2 and "needs --protected" in err
    code, _, err = cli("eval", digits_model_path, "--data", "digits-test", *FAST, "--protected", "3,tiger")
    assert code == 2 and "unknown protected class 'tiger'" in err


def test_robust_prediction_is_the_worst_case_prediction(digits_model_path):
    import hardenctl
    from hardenctl.attacks import PGD
    from hardenctl.evaluation import SuiteRun, run_suite

    model = hardenctl.load_model(digits_model_path)
    data = hardenctl.load_data("digits-test", model, n=64)
    result = run_suite(model, data, SuiteRun([PGD(8 / 255, "linf", 1, steps=10, alpha=2 / 255)], 8 / 255, "linf", 32))
    assert torch.equal(result.robust_prediction == data.y, result.robust)
    assert 0 < int(result.robust.sum()) < 64  # both robust and broken points are covered
