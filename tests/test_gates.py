"""Release gates: failed sanity checks fail the gate by default; baselines must be comparable."""
from __future__ import annotations


import pytest
import torch

from hardenctl.errors import UserError
from hardenctl.gates import CHECK_NAMES, apply_gates, check_comparable
from hardenctl.models import load_model, save_model
from hardenctl.report import Check, Report
from testing_helpers import read_json

FAST = ("--attacks", "fgsm", "--n", "32", "--batch-size", "32", "--quiet")


def make_report(**changes) -> Report:
    values = dict(schema_version="1.0", clean_accuracy=0.9, robust_accuracy=0.5, attacks={"pgd": 0.5}, per_class={}, n=100,
                  eps=8 / 255, norm="linf", suite="quick", seed=0, model_sha256="m", data_sha256="d", versions={},
                  normalization={}, seconds=1.0, attack_list=["PGD(eps=0.031373, norm=linf)"],
                  checks=[Check("input_gradients_nonzero", False, "masked"), Check("perturbations_in_bounds", True, "ok")])
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
    apply_gates(allowed, allowed_checks=["input_gradients_nonzero"])
    assert gate(allowed).passed and allowed.accepted_checks == ["input_gradients_nonzero"]
    other = make_report()
    apply_gates(other, allowed_checks=["square_not_stronger_than_whitebox"])
    assert not gate(other).passed  # accepting another check accepts nothing here
    lax = make_report()
    apply_gates(lax, strict=False)
    assert gate(lax).passed and lax.accepted_checks == ["input_gradients_nonzero"]
    assert "FAIL (accepted)" in lax.to_markdown()


@pytest.mark.parametrize("field,value,named", [("eps", 4 / 255, "ε"), ("norm", "l2", "norm"), ("suite", "standard", "suite"),
                                                ("n", 200, "n "), ("data_sha256", "other", "data"),
                                                ("attacks", {"apgd-ce": 0.5}, "attacks"),
                                                ("attack_list", ["APGD"], "attack settings")])
def test_baselines_made_differently_are_refused_naming_the_difference(field, value, named):
    baseline = make_report(**{field: value})
    with pytest.raises(UserError, match=named):
        apply_gates(make_report(), baseline=baseline)
    check_comparable(make_report(), make_report())  # the same settings are comparable


def test_every_check_evaluate_can_report_is_named(digits_model_path):
    from hardenctl.evaluate import EvalConfig, evaluate
    import hardenctl

    model = load_model(digits_model_path)
    report = evaluate(model, hardenctl.load_data("digits-test", model, n=16),
                      EvalConfig(attacks=["pgd", "square"], square_queries=20, eps_sweep=[0, 0.1], large_eps_samples=8))
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
    args = ("eval", saturated_path, "--data", "digits-test", "--attacks", "pgd", "--n", "32", "--quiet", "--min-robust-acc", "0")
    code, _, err = cli(*args, "--report", tmp_path / "r.json")
    assert code == 1 and "sanity_checks" in err and "input_gradients_nonzero" in err, err
    code, _, err = cli(*args, "--allow-check", "input_gradients_nonzero", "--report", tmp_path / "a.json")
    assert code == 1 and "near_zero_accuracy_at_large_eps" in err  # PGD on CE cannot move it at eps 0.5 either
    accept = ("--allow-check", "input_gradients_nonzero", "--allow-check", "near_zero_accuracy_at_large_eps")
    code, _, err = cli(*args, *accept, "--report", tmp_path / "a.json")
    assert code == 0, err
    assert read_json(tmp_path / "a.json")["accepted_checks"] == ["input_gradients_nonzero", "near_zero_accuracy_at_large_eps"]
    assert cli(*args, "--no-strict")[0] == 0


def test_cli_unknown_allow_check_is_a_usage_error(cli, digits_model_path):
    code, _, err = cli("eval", digits_model_path, "--data", "digits-test", *FAST, "--allow-check", "robust_le_clean")
    assert code == 2 and "unknown check" in err


def test_cli_refuses_an_incomparable_baseline_before_attacking(cli, digits_model_path, tmp_path):
    base = ("eval", digits_model_path, *FAST)
    assert cli(*base, "--data", "digits-test", "--report", tmp_path / "base.json")[0] == 0
    for extra, named in ((("--data", "digits-test", "--eps", "4/255"), "with ε 0.031373"),
                         (("--data", "digits-test", "--n", "16"), "with n 32"),
                         (("--data", "digits-train"), "with data"),
                         (("--data", "digits-test", "--attacks", "pgd"), "with attacks ['fgsm']")):
        args = [a for a in base if a not in ("fgsm", "--attacks")] + ["--attacks", "fgsm"] if "--attacks" not in extra else \
            [a for a in base if a not in ("fgsm", "--attacks")]
        code, _, err = cli(*args, *extra, "--baseline", tmp_path / "base.json", "--report", tmp_path / "new.json")
        assert code == 2 and named in err, (extra, err)
        assert not (tmp_path / "new.json").exists()
    code, _, err = cli(*base, "--data", "digits-test", "--baseline", tmp_path / "base.json")
    assert code == 0, err
