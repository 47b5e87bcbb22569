"""The evaluation engine's guarantees: worst case per sample, checks that catch false robustness."""

from __future__ import annotations

import copy

import pytest
import torch
from testing_helpers import BufferWriter
from torch import nn

import hardenctl
from hardenctl.attacks import Attack
from hardenctl.data import ArrayDataset, load_dataset
from hardenctl.evaluation import EvalConfig, SuiteRun, evaluate, is_randomized, run_suite
from hardenctl.report import render_markdown


def checks_of(report):
    return {c.name: c for c in report.checks}


@pytest.fixture(scope="module")
def digits_model(digits_model_path):
    return hardenctl.load_model(digits_model_path)


@pytest.fixture(scope="module")
def digits_test(digits_model):
    return hardenctl.load_data("digits-test", digits_model, n=64)


def test_saturated_logits_are_not_reported_robust(digits_model, digits_test):
    """Final layer ×1e4: CE gradients underflow. PGD on CE is fooled; the standard suite is not."""
    saturated = copy.deepcopy(digits_model)
    with torch.no_grad():
        saturated.model.fc.weight.mul_(1e4)
        saturated.model.fc.bias.mul_(1e4)
    eps = 0.15
    honest = evaluate(digits_model, digits_test, EvalConfig(eps=eps, attacks=["pgd"], large_eps_samples=0))
    masked_pgd = evaluate(saturated, digits_test, EvalConfig(eps=eps, attacks=["pgd"], large_eps_samples=0))
    standard = evaluate(
        saturated,
        digits_test,
        EvalConfig(eps=eps, suite="standard", apgd_steps=30, square_queries=300, large_eps_samples=32),
    )
    assert masked_pgd.robust_accuracy > honest.robust_accuracy + 0.2  # the masking is real
    assert standard.robust_accuracy <= honest.robust_accuracy + 0.05  # ... and the standard suite sees through it
    assert not checks_of(standard)["input_gradients_nonzero"].passed
    assert checks_of(honest)["input_gradients_nonzero"].passed


class Quantised(nn.Module):
    """Rounds its input to 2 levels: zero gradient everywhere, so white-box attacks stall."""

    def __init__(self, model):
        super().__init__()
        self.model, self.info = model, model.info

    def forward(self, x):
        return self.model(torch.round(x))


def test_square_beating_whitebox_is_flagged(digits_model, digits_test):
    report = evaluate(
        Quantised(digits_model),
        digits_test,
        EvalConfig(eps=0.3, attacks=["pgd", "square"], square_queries=300, large_eps_samples=0),
    )
    check = checks_of(report)["square_not_stronger_than_whitebox"]
    assert not check.passed, check.detail
    assert report.attacks["square"] < report.attacks["pgd"] - 0.02


def test_buffer_changes_are_caught(digits_model, digits_test):
    report = evaluate(
        BufferWriter(digits_model), digits_test.head(16), EvalConfig(attacks=["fgsm"], large_eps_samples=0)
    )
    assert not checks_of(report)["eval_mode_and_buffers_unchanged"].passed
    clean = evaluate(digits_model, digits_test.head(16), EvalConfig(attacks=["fgsm"], large_eps_samples=0))
    assert checks_of(clean)["eval_mode_and_buffers_unchanged"].passed


class Overshoot(Attack):
    """A buggy attack that steps outside the ε-ball."""

    name = "overshoot"

    def perturb(self, model, x, y):
        return (x + 3 * self.eps).clamp(0, 1)


class MeanThreshold(nn.Module):
    """Class 1 when the mean pixel exceeds 0.5, else class 0: how far an input moved decides its label."""

    def forward(self, x):
        margin = (x.flatten(1).mean(dim=1) - 0.5) * 100
        return torch.stack([-margin, margin], dim=1)


def test_out_of_ball_perturbations_are_flagged_projected_and_rescored():
    """The buggy attack's point (3ε away) fools the model; its projection onto the ε-ball does not.
    The suite must count the violation, score the projected point by a fresh forward pass, and keep it robust."""
    x = torch.full((8, 1, 4, 4), 0.45)
    data = ArrayDataset(x, torch.zeros(8, dtype=torch.long), ["low", "high"], "synthetic")
    result = run_suite(MeanThreshold(), data, SuiteRun([Overshoot(0.03)], 0.03, "linf", 8))
    assert result.bound_violations == 8
    assert result.max_linf == pytest.approx(0.09, abs=1e-6)
    assert result.robust.all()  # scored at 0.48 (projected), not at 0.54 (what the attack returned)
    assert (result.robust_prediction == 0).all()


class FoolEverything(Attack):
    """Returns, within the ball, a point the MeanThreshold model puts in class 1."""

    name = "fool"

    def perturb(self, model, x, y):
        return (x + self.eps).clamp(0, 1)


class Identity(Attack):
    """Returns the clean point: it would 'repair' any point an earlier attack broke if it overwrote the result."""

    name = "identity"
    calls = 0

    def perturb(self, model, x, y):
        Identity.calls += x.shape[0]
        return x


def test_a_later_attack_cannot_repair_a_point_an_earlier_attack_broke():
    data = ArrayDataset(torch.full((6, 1, 4, 4), 0.45), torch.zeros(6, dtype=torch.long), ["low", "high"], "synthetic")
    Identity.calls = 0
    result = run_suite(MeanThreshold(), data, SuiteRun([FoolEverything(0.1), Identity(0.1)], 0.1, "linf", 3))
    assert not result.robust.any()  # worst case over the suite, per sample
    assert result.after_attack == {"fool": 0, "identity": 0}
    assert Identity.calls == 0  # attacks run only on the points still robust
    assert (result.robust_prediction == 1).all()
    repaired = run_suite(MeanThreshold(), data, SuiteRun([Identity(0.1)], 0.1, "linf", 3))
    assert repaired.robust.all()  # the identity attack alone breaks nothing: the first result is the attack's doing


def test_gradient_check_rules():
    from hardenctl.attacks import GradientStats
    from hardenctl.evaluation import gradient_check

    honest = {"apgd-ce": GradientStats(100, 10, 0, 0), "apgd-t": GradientStats(40, 0, 0, 0)}
    assert gradient_check(honest).passed  # a few saturated confident points are no evidence
    saturated = {"apgd-ce": GradientStats(100, 90, 0, 0), "apgd-t": GradientStats(200, 0, 0, 0)}
    check = gradient_check(saturated)
    assert not check.passed and check.value == pytest.approx(0.9) and "apgd-ce" in check.detail  # judged per attack
    assert not gradient_check({"pgd": GradientStats(100, 5, 0, 5)}).passed  # output does not depend on the input
    assert gradient_check({"pgd": GradientStats(1000, 5, 0, 5)}).passed  # 0.5% flat-margin points: under the 1% limit
    # the worst attack decides, whichever order the attacks ran in (found by benchmarks/mutation.py)
    assert not gradient_check({"apgd-ce": GradientStats(100, 60, 0, 0), "apgd-t": GradientStats(100, 10, 0, 0)}).passed
    assert not gradient_check({"pgd": GradientStats(100, 0, 1, 0)}).passed  # NaN/inf gradient


def test_randomised_model_without_eot_fails_its_check(digits_model, digits_test):
    noisy = NoisyModel(digits_model)
    data = digits_test.head(16)
    single = evaluate(noisy, data, EvalConfig(attacks=["fgsm"], eot_samples=1, eps=0.05, large_eps_samples=0))
    assert single.randomized and not checks_of(single)["eot_used_for_randomized_model"].passed
    averaged = evaluate(noisy, data, EvalConfig(attacks=["fgsm"], eot_samples=3, eps=0.05, large_eps_samples=0))
    assert checks_of(averaged)["eot_used_for_randomized_model"].passed
    honest = evaluate(digits_model, data, EvalConfig(attacks=["fgsm"], eot_samples=1, eps=0.05, large_eps_samples=0))
    assert not honest.randomized and checks_of(honest)["eot_used_for_randomized_model"].passed


def test_empty_data_is_an_error(digits_model, digits_test):
    from hardenctl.errors import UserError

    with pytest.raises(UserError, match="no samples to evaluate"):
        evaluate(
            digits_model,
            ArrayDataset(digits_test.x[:0], digits_test.y[:0], digits_test.class_names, "empty"),
            EvalConfig(attacks=["fgsm"]),
        )


class InputIgnorer(nn.Module):
    """Predicts class 0 whatever the input: 'robust' at every ε, which is impossible for a real model."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(1, 10)
        with torch.no_grad():
            self.linear.weight.zero_()
            self.linear.bias.copy_(torch.arange(10, 0, -1).float())

    def forward(self, x):
        return self.linear(x.flatten(1)[:, :1] * 0)


def test_large_eps_check_fires_on_an_input_ignoring_model():
    data = ArrayDataset(
        torch.rand(20, 1, 8, 8), torch.zeros(20, dtype=torch.long), [str(i) for i in range(10)], "synthetic"
    )
    report = evaluate(InputIgnorer(), data, EvalConfig(attacks=["pgd"], large_eps_samples=20))
    assert report.robust_accuracy == 1.0
    assert not checks_of(report)["near_zero_accuracy_at_large_eps"].passed
    assert checks_of(report)["input_gradients_nonzero"].passed is False


class NoisyModel(nn.Module):
    """Adds input noise at eval time: a randomised defence."""

    def __init__(self, model, sigma=0.3):
        super().__init__()
        self.model, self.info, self.sigma = model, model.info, sigma

    def forward(self, x):
        return self.model((x + self.sigma * torch.randn_like(x)).clamp(0, 1))


def test_randomised_model_gets_eot_and_all_draws_scoring(digits_model, digits_test):
    noisy = NoisyModel(digits_model)
    assert is_randomized(noisy, digits_test.pixels(0, 8))
    assert not is_randomized(digits_model, digits_test.pixels(0, 8))
    data = digits_test.head(32)
    report = evaluate(noisy, data, EvalConfig(attacks=["pgd"], eot_samples=4, eps=0.05, large_eps_samples=0))
    assert report.randomized and report.eot_samples == 4
    assert any("EOT" in line or "eot" in line.lower() for line in render_markdown(report).splitlines())
    # Clean accuracy is the mean over draws; a robust point must be right on every draw.
    assert 0 < report.clean_accuracy < 1
    assert report.robust_accuracy < report.clean_accuracy  # eps 0.05 under EOT-PGD breaks some points


class SpyAttack(Attack):
    name = "spy"
    largest_batch = 0

    def perturb(self, model, x, y):
        SpyAttack.largest_batch = max(SpyAttack.largest_batch, x.shape[0])
        return x


def test_attacks_stream_batches_so_memory_is_flat():
    data = load_dataset("digits").head(300)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    run_suite(model, data, SuiteRun([SpyAttack(0.1)], 0.1, "linf", 50))
    assert 0 < SpyAttack.largest_batch <= 50


def test_worst_case_is_per_sample_over_the_suite(digits_model, digits_test):
    report = evaluate(digits_model, digits_test, EvalConfig(eps=0.1, attacks=["fgsm", "pgd"], large_eps_samples=0))
    fgsm_only = evaluate(digits_model, digits_test, EvalConfig(eps=0.1, attacks=["fgsm"], large_eps_samples=0))
    assert report.attacks["fgsm"] == pytest.approx(fgsm_only.robust_accuracy)
    assert report.robust_accuracy == report.attacks["pgd"] <= report.attacks["fgsm"]
    per_class_robust = sum(v["robust_accuracy"] * v["n"] for v in report.per_class.values()) / report.n
    assert per_class_robust == pytest.approx(report.robust_accuracy)


def test_python_api_evaluates_a_path(digits_model_path):
    report = hardenctl.evaluate(digits_model_path, "digits-test", n=16, attacks=["fgsm"], large_eps_samples=0)
    assert report.n == 16 and report.clean_accuracy > 0.8 and report.attacks == {"fgsm": report.robust_accuracy}
