"""Release gates: failed sanity checks fail the gate by default; baselines must be comparable."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from testing_helpers import read_json

from hardenctl.comparable import check_comparable
from hardenctl.errors import UserError
from hardenctl.evaluation.samples import read_samples, write_samples
from hardenctl.gates import CHECK_NAMES, Baseline, apply_gates, describe_failure
from hardenctl.models import load_model, save_model
from hardenctl.paired import paired_comparison
from hardenctl.report import Check, Report, SampleResults, render_markdown, render_table

FAST = ("--attacks", "fgsm", "--n", "32", "--batch-size", "32", "--quiet")


def make_report(**changes) -> Report:
    values = dict(
        schema_version="1.0",
        clean_accuracy=0.9,
        robust_accuracy=0.5,
        attacks={"pgd": 0.5},
        per_class={},
        n=100,
        eps=8 / 255,
        norm="linf",
        suite="quick",
        seed=0,
        model_sha256="m",
        data_sha256="d",
        versions={},
        normalization={},
        seconds=1.0,
        attack_list=["PGD(eps=0.031373, norm=linf)"],
        checks=[Check("input_gradients_nonzero", False, "masked"), Check("perturbations_in_bounds", True, "ok")],
    )
    values.update(changes)
    return Report(**values)


def gate(report: Report, name: str = "sanity_checks"):
    return {g.name: g for g in report.gates}[name]


def test_a_failed_check_fails_the_gate_by_default():
    report = make_report()
    apply_gates(report, min_robust_acc=0.4)
    assert gate(report, "min_robust_acc").passed and not gate(report).passed
    assert report.accepted_checks == []


def test_allow_check_and_no_strict_accept_knowingly_and_are_recorded():
    allowed = make_report()
    apply_gates(allowed, allow_check=("input_gradients_nonzero",))
    assert gate(allowed).passed and allowed.accepted_checks == ["input_gradients_nonzero"]
    other = make_report()
    apply_gates(other, allow_check=("square_not_stronger_than_whitebox",))
    assert not gate(other).passed  # accepting another check accepts nothing here
    lax = make_report()
    apply_gates(lax, strict=False)
    assert gate(lax).passed and lax.accepted_checks == ["input_gradients_nonzero"]
    assert "FAIL (accepted)" in render_markdown(lax)


@pytest.mark.parametrize(
    "field,value,named",
    [
        ("eps", 4 / 255, "ε"),
        ("norm", "l2", "norm"),
        ("suite", "standard", "suite"),
        ("n", 200, "n "),
        ("data_sha256", "other", "data"),
        ("attacks", {"apgd-ce": 0.5}, "attacks"),
        ("attack_list", ["APGD"], "attack settings"),
    ],
)
def test_baselines_made_differently_are_refused_naming_the_difference(field, value, named):
    baseline = make_report(**{field: value})
    with pytest.raises(UserError, match=named):
        apply_gates(make_report(), baseline=baseline)
    check_comparable(make_report(), make_report())  # the same settings are comparable


FULL_PGD = "PGD(eps=0.031373, norm=linf, eot_samples=1, steps=20, alpha=0.0078431, restarts=1, random_start=True)"


def test_a_baseline_from_before_attacks_named_every_setting_is_compared_on_attack_eps_and_norm():
    """0.1.0 recorded ``PGD(eps=..., norm=...)``: a cached baseline of that version stays usable after an upgrade,
    and is still refused when its attack, eps or norm differ."""
    now = make_report(attack_list=[FULL_PGD])
    check_comparable(now, make_report(attack_list=["PGD(eps=0.031373, norm=linf)"]))
    for older in ("APGD(eps=0.031373, norm=linf)", "PGD(eps=0.015686, norm=linf)"):
        with pytest.raises(UserError, match="attack settings"):
            check_comparable(now, make_report(attack_list=[older]))


def test_a_baseline_naming_every_setting_is_compared_on_every_setting():
    with pytest.raises(UserError, match="attack settings"):
        check_comparable(
            make_report(attack_list=[FULL_PGD]), make_report(attack_list=[FULL_PGD.replace("steps=20", "steps=10")])
        )


def test_every_check_evaluate_can_report_is_named(digits_model_path):
    import hardenctl
    from hardenctl.evaluation import EvalConfig, evaluate

    model = load_model(digits_model_path)
    report = evaluate(
        model,
        hardenctl.load_data("digits-test", model, n=16),
        EvalConfig(attacks=["pgd", "square"], square_queries=20, eps_sweep=[0, 0.1], large_eps_samples=8),
    )
    assert {c.name for c in report.checks} == set(CHECK_NAMES)


@pytest.fixture(scope="module")
def saturated_path(digits_model_path, tmp_path_factory):
    """The digits model with its logits scaled by 1e4: cross-entropy gradients underflow (gradient masking)."""
    model = load_model(digits_model_path)
    with torch.no_grad():
        model.model.fc.weight.mul_(1e4)
        model.model.fc.bias.mul_(1e4)
    return save_model(model, tmp_path_factory.mktemp("masked") / "saturated.safetensors")


def test_cli_masked_model_fails_the_gate_unless_accepted(cli, saturated_path, tmp_path):
    args = (
        "eval",
        saturated_path,
        "--data",
        "digits-test",
        "--attacks",
        "pgd",
        "--n",
        "32",
        "--quiet",
        "--min-robust-acc",
        "0",
    )
    code, _, err = cli(*args, "--report", tmp_path / "r.json")
    assert code == 1 and "sanity_checks" in err and "input_gradients_nonzero" in err, err
    code, _, err = cli(*args, "--allow-check", "input_gradients_nonzero", "--report", tmp_path / "a.json")
    assert code == 1 and "near_zero_accuracy_at_large_eps" in err  # PGD on CE cannot move it at eps 0.5 either
    accept = ("--allow-check", "input_gradients_nonzero", "--allow-check", "near_zero_accuracy_at_large_eps")
    code, _, err = cli(*args, *accept, "--report", tmp_path / "a.json")
    assert code == 0, err
    assert read_json(tmp_path / "a.json")["accepted_checks"] == [
        "input_gradients_nonzero",
        "near_zero_accuracy_at_large_eps",
    ]
    assert cli(*args, "--no-strict")[0] == 0


def test_cli_unknown_allow_check_is_a_usage_error(cli, digits_model_path):
    code, _, err = cli("eval", digits_model_path, "--data", "digits-test", *FAST, "--allow-check", "robust_le_clean")
    assert code == 2 and "unknown check" in err


def test_cli_refuses_an_incomparable_baseline_before_attacking(cli, digits_model_path, tmp_path):
    base = ("eval", digits_model_path, *FAST)
    assert cli(*base, "--data", "digits-test", "--report", tmp_path / "base.json")[0] == 0
    for extra, named in (
        (("--data", "digits-test", "--eps", "4/255"), "with ε 0.031373"),
        (("--data", "digits-test", "--n", "16"), "with n 32"),
        (("--data", "digits-train"), "with data"),
        (("--data", "digits-test", "--attacks", "pgd"), "with attacks ['fgsm']"),
    ):
        args = (
            [a for a in base if a not in ("fgsm", "--attacks")] + ["--attacks", "fgsm"]
            if "--attacks" not in extra
            else [a for a in base if a not in ("fgsm", "--attacks")]
        )
        code, _, err = cli(*args, *extra, "--baseline", tmp_path / "base.json", "--report", tmp_path / "new.json")
        assert code == 2 and named in err, (extra, err)
        assert not (tmp_path / "new.json").exists()
    code, _, err = cli(*base, "--data", "digits-test", "--baseline", tmp_path / "base.json")
    assert code == 0, err


# -- intervals, --gate-on lower, paired regression gates (issue 14) ---------------------------------------------------


def samples_of(robust: list[bool], labels: list[int] | None = None, clean: list[float] | None = None) -> SampleResults:
    n = len(robust)
    labels = labels or [i % 10 for i in range(n)]
    return SampleResults(
        index=list(range(n)),
        source_id=[f"img/{i:04d}.png" for i in range(n)],
        label=labels,
        clean_prediction=list(labels),
        clean_correct=clean or [1.0] * n,
        robust=list(robust),
        broken_by=[None if r else "apgd-ce" for r in robust],
        adversarial_prediction=[y if r else (y + 1) % 10 for y, r in zip(labels, robust)],
    )


def report_of(samples: SampleResults, **changes) -> Report:
    n = len(samples)
    robust = sum(samples.robust) / n
    return make_report(
        clean_accuracy=sum(samples.clean_correct) / n,
        robust_accuracy=robust,
        attacks={"pgd": robust},
        n=n,
        samples=samples,
        checks=[],
        **changes,
    )


def test_report_json_carries_wilson_intervals():
    report = make_report(
        robust_accuracy=0.45,
        attacks={"pgd": 0.6, "square": 0.45},
        per_class={"3": {"name": "cat", "n": 100, "clean_accuracy": 0.45, "robust_accuracy": 0.0}},
        extra={
            "protected": {
                "classes": [3],
                "cost": 10.0,
                "n": 100,
                "clean_accuracy": 0.45,
                "robust_accuracy": 0.0,
                "cost_weighted_robust_error": 1.0,
            }
        },
    )
    data = json.loads(report.to_json())
    assert data["interval_method"] == "wilson"
    assert data["intervals"]["robust_accuracy"] == pytest.approx([0.356145, 0.547554], abs=1e-4)  # 45/100 by hand
    assert list(data["intervals"]["attacks"]) == ["pgd", "square"]
    assert data["intervals"]["attacks"]["square"] == data["intervals"]["robust_accuracy"]
    lo, hi = data["intervals"]["clean_accuracy"]
    assert lo < 0.9 < hi
    cat = data["per_class"]["3"]
    assert cat["clean_interval"] == pytest.approx([0.356145, 0.547554], abs=1e-4)
    assert cat["robust_interval"][0] == 0.0 and cat["robust_interval"][1] == pytest.approx(3.8415 / 103.8415, abs=1e-4)
    assert data["extra"]["protected"]["clean_interval"] == cat["clean_interval"]
    assert (
        "cat" in data["per_class"]["3"]["name"] and "clean_interval" not in report.per_class["3"]
    )  # derived, not stored
    text = render_markdown(report)
    assert (
        "| **robust (worst case)** | **45.00%** (35.6–54.8) |" in text and "| after pgd | 60.00% (50.2–69.1) |" in text
    )
    assert "| 3 cat | 100 | 45.00% (35.6–54.8) | 0.00% (0.0–3.7) |" in text


def test_console_table_has_an_interval_column():
    from rich.console import Console

    console = Console(record=True, width=120)
    console.print(render_table(make_report(robust_accuracy=0.45, attacks={"pgd": 0.45})))
    text = console.export_text()
    assert "95% interval" in text and "35.6–54.8%" in text


def test_gate_on_lower_fails_where_the_point_estimate_passes():
    point, lower = make_report(checks=[]), make_report(checks=[])  # robust 0.50, clean 0.90 over n = 100
    apply_gates(point, min_clean_acc=0.85, min_robust_acc=0.45)
    apply_gates(lower, min_clean_acc=0.85, min_robust_acc=0.45, gate_on="lower")
    assert gate(point, "min_robust_acc").passed and gate(point, "min_robust_acc").value == 0.5
    robust = gate(lower, "min_robust_acc")
    assert not robust.passed and robust.basis == "lower95"
    assert robust.value == pytest.approx(lower.interval("robust_accuracy")[0]) and robust.value == pytest.approx(
        0.4038, abs=1e-4
    )
    assert (
        gate(point, "min_clean_acc").passed and not gate(lower, "min_clean_acc").passed
    )  # 0.90 over 100: lower bound 0.826
    assert gate(lower, "min_clean_acc").value == pytest.approx(0.8256, abs=1e-4)
    relaxed = make_report(checks=[])
    apply_gates(relaxed, min_clean_acc=0.8, gate_on="lower")
    assert gate(relaxed, "min_clean_acc").passed  # 0.826 >= 0.80
    data = json.loads(lower.to_json())
    assert data["gate_on"] == "lower" and json.loads(point.to_json())["gate_on"] == "point"
    assert {g["name"]: g["basis"] for g in data["gates"]}["min_robust_acc"] == "lower95"
    assert "min_robust_acc (95% lower bound): 0.4038 < 0.4500" in describe_failure(lower, robust)
    assert "95% lower bound" in render_markdown(lower)


def test_gate_on_lower_protected_classes():
    section = {
        "classes": [3],
        "cost": 10.0,
        "n": 20,
        "clean_accuracy": 1.0,
        "robust_accuracy": 0.75,
        "cost_weighted_robust_error": 0.1,
    }
    report = make_report(checks=[], extra={"protected": section})
    apply_gates(report, min_protected_robust_acc=0.6, gate_on="lower")
    value = gate(report, "min_protected_robust_acc").value
    assert value == pytest.approx(0.5313, abs=1e-4) and not gate(report, "min_protected_robust_acc").passed  # 15/20
    none = make_report(
        checks=[], extra={"protected": {**section, "n": 0, "clean_accuracy": None, "robust_accuracy": None}}
    )
    apply_gates(none, min_protected_robust_acc=0.0, gate_on="lower")
    assert gate(none, "min_protected_robust_acc").value == 0.0


def test_gate_on_must_be_point_or_lower():
    with pytest.raises(UserError, match="--gate-on"):
        apply_gates(make_report(), gate_on="upper")


def binomial_two_sided(b: int, c: int) -> float:
    """Exact McNemar computed here, independently: 2·Σ_{k ≤ min(b,c)} C(b+c, k)/2^(b+c), capped at 1."""
    return min(1.0, 2 * sum(math.comb(b + c, k) for k in range(min(b, c) + 1)) / 2 ** (b + c))


def test_paired_gate_counts_regressed_and_improved_on_constructed_files(tmp_path):
    n = 100
    before = [i < 60 for i in range(n)]  # samples 0..59 robust in the baseline
    now = [
        (i < 60 and i not in range(10, 18)) or i in (70, 71) for i in range(n)
    ]  # 10..17 regressed, 70 and 71 improved
    baseline = report_of(samples_of(before))
    write_samples(baseline, tmp_path / "old.samples.jsonl")
    _, baseline_samples = read_samples(tmp_path / "old.samples.jsonl")
    current = report_of(samples_of(now))
    apply_gates(
        current,
        baseline=Baseline(baseline, "old.json", baseline_samples, Path("old.samples.jsonl")),
        max_drop=0.05,
    )
    paired = current.extra["paired"]
    assert (
        paired["robust"]["regressed"] == 8 and paired["robust"]["improved"] == 2 and paired["robust"]["unchanged"] == 90
    )
    assert paired["robust"]["mcnemar_p"] == pytest.approx(binomial_two_sided(8, 2), abs=1e-15)
    assert binomial_two_sided(8, 2) == 0.109375
    assert paired["robust"]["difference"] == pytest.approx((8 - 2) / n)
    assert [r["index"] for r in paired["regressed_samples"]] == list(range(10, 18))
    assert paired["regressed_samples"][0] == {
        "index": 10,
        "source_id": "img/0010.png",
        "label": 0,
        "adversarial_prediction": 1,
        "broken_by": "apgd-ce",
    }
    assert paired["clean"] == {"regressed": 0, "improved": 0, "difference": 0.0, "mcnemar_p": 1.0}
    drop = gate(current, "max_drop_robust_accuracy")
    assert drop.basis == "paired" and drop.value == pytest.approx(0.06) and not drop.passed  # 0.06 > 0.05
    assert gate(current, "max_drop_clean_accuracy").passed
    text = render_markdown(current)
    assert "## Paired comparison with the baseline" in text and "**8 regressed**" in text and "p = 0.1094" in text
    assert "| 10 | img/0010.png | 0 | 1 | apgd-ce |" in text and "| 70 |" not in text
    assert json.loads(current.to_json())["extra"]["paired"] == paired


def test_paired_regressed_list_is_capped_with_a_count():
    n = 80
    baseline = report_of(samples_of([True] * n))
    current = report_of(samples_of([i >= 70 for i in range(n)]))  # 70 regressed
    apply_gates(current, baseline=Baseline(baseline, samples=baseline.samples), max_drop=1.0)
    paired = current.extra["paired"]
    assert paired["robust"]["regressed"] == 70 and len(paired["regressed_samples"]) == 50
    assert "… and 20 more (70 regressed in all" in render_markdown(current)


def test_paired_clean_with_fractions_of_draws_has_no_mcnemar():
    baseline = report_of(samples_of([False] * 4, clean=[1.0, 0.5, 0.25, 0.0]))
    current = report_of(samples_of([False] * 4, clean=[0.75, 0.5, 0.5, 0.0]))
    apply_gates(current, baseline=Baseline(baseline, samples=baseline.samples))
    clean = current.extra["paired"]["clean"]
    assert clean == {"regressed": 1, "improved": 1, "difference": 0.0, "mcnemar_p": None}


def test_without_per_sample_baseline_the_drop_compares_rates():
    baseline, current = report_of(samples_of([True] * 10)), report_of(samples_of([True] * 9 + [False]))
    apply_gates(current, baseline=baseline, max_drop=0.2)
    assert "paired" not in current.extra
    assert gate(current, "max_drop_robust_accuracy").basis == "rates"
    assert gate(current, "max_drop_robust_accuracy").value == pytest.approx(0.1)


def test_paired_comparison_refuses_other_samples():
    baseline = report_of(samples_of([True] * 10))
    with pytest.raises(UserError, match="have 12 samples but this evaluation has 10"):
        paired_comparison(report_of(samples_of([True] * 10)), samples_of([True] * 12))
    with pytest.raises(UserError, match="label 5 at sample 3"):
        paired_comparison(
            report_of(samples_of([True] * 10)), samples_of([True] * 10, labels=[0, 1, 2, 5, 4, 5, 6, 7, 8, 9])
        )
    with pytest.raises(UserError, match="with ε"):  # the reports themselves must still be comparable
        apply_gates(
            report_of(samples_of([True] * 10), eps=4 / 255), baseline=Baseline(baseline, samples=baseline.samples)
        )
    with pytest.raises(UserError, match="no per-sample results"):
        apply_gates(make_report(n=10), baseline=Baseline(baseline, samples=baseline.samples))
