"""cost-sensitive (our design, RECIPES.md): cost-weighted loss, gradient share, Min-Max statistics, protected
metrics."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hardenctl.errors import UserError
from hardenctl.recipes import REGISTRY, load_recipe, parse_overrides
from hardenctl.recipes.cost_sensitive import (
    CostSensitive,
    CostSensitiveConfig,
    class_weights,
    cost_matrix,
    cost_sensitive_loss,
    minmax_penalty,
    minmax_stats,
    minmax_summary,
)
from hardenctl.recipes.mart import mart_loss
from hardenctl.recipes.trades import trades_loss

K = 6


def recipe(**values) -> CostSensitive:
    return CostSensitive(CostSensitiveConfig.from_mapping(values, "test"))


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, K))


def batch():
    torch.manual_seed(1)
    x = torch.rand(8, 3, 2, 2)
    return x, torch.tensor([0, 1, 2, 3, 4, 5, 3, 0]), (x + 0.03 * torch.randn_like(x)).clamp(0, 1)


def test_cost_matrix_and_row_weights():
    c = cost_matrix(4, [1], 10)
    assert torch.equal(c.diagonal(), torch.zeros(4))
    assert torch.equal(c[1], torch.tensor([10.0, 0, 10, 10])) and torch.equal(c[0], torch.tensor([0.0, 1, 1, 1]))
    assert torch.allclose(class_weights(c), torch.tensor([1.0, 10, 1, 1]))


@pytest.mark.parametrize(
    "base, reference",
    [
        ("pgd-at", lambda m, x, y, xa: F.cross_entropy(m(xa), y)),
        ("trades", lambda m, x, y, xa: trades_loss(m(x), m(xa), y, 6.0)),
        ("mart", lambda m, x, y, xa: mart_loss(m(x), m(xa), y, 6.0)),
    ],
)
def test_equal_costs_reduce_to_the_base_loss(base, reference):
    model, (x, y, x_adv) = tiny_model(), batch()
    loss = recipe(protected=[3, 5], cost=1, lambda_cost=0, base=base).loss(model, x, y, x_adv)
    assert loss.item() == pytest.approx(reference(model, x, y, x_adv).item(), rel=1e-6)


def test_with_equal_costs_the_lambda_term_is_lambda_times_one_minus_p_y():
    model, (x, y, x_adv) = tiny_model(), batch()
    loss = recipe(cost=1, lambda_cost=0.5).loss(model, x, y, x_adv)
    logits = model(x_adv)
    p_y = F.softmax(logits, dim=1).gather(1, y[:, None]).squeeze(1)
    assert loss.item() == pytest.approx((F.cross_entropy(logits, y) + 0.5 * (1 - p_y).mean()).item(), rel=1e-6)


def test_not_adversarial_trains_on_x():
    model, (x, y, x_adv) = tiny_model(), batch()
    loss = recipe(cost=1, adversarial=False).loss(model, x, y, x_adv)
    assert loss.item() == pytest.approx(F.cross_entropy(model(x), y).item(), rel=1e-6)


@pytest.mark.parametrize("base,batch_loss", [("trades", trades_loss), ("mart", mart_loss)])
def test_equal_costs_reduce_to_the_trades_and_mart_base_losses(base, batch_loss):
    model, (x, y, x_adv) = tiny_model(), batch()
    loss = recipe(cost=1, base=base, beta=5.0).loss(model, x, y, x_adv)
    assert loss.item() == pytest.approx(batch_loss(model(x), model(x_adv), y, 5.0).item(), rel=1e-6)


def gradient_norms(cost: float, lambda_cost: float) -> tuple[float, float]:
    """Gradient norm of the loss w.r.t. the logits of a protected sample and of an unprotected one with the same CE."""
    base = torch.tensor([2.0, 0.5, -1.0, 0.3, 0.0, 1.0])
    protected_logits = base.clone()
    protected_logits[[0, 3]] = base[[3, 0]]  # the same logits, with the label's logit moved to class 3
    logits = torch.stack([protected_logits, base]).requires_grad_(True)
    y = torch.tensor([3, 0])
    loss = cost_sensitive_loss(
        F.cross_entropy(logits, y, reduction="none"), logits, y, cost_matrix(K, [3], cost), lambda_cost
    )
    (grad,) = torch.autograd.grad(loss, logits)
    return float(grad[0].norm()), float(grad[1].norm())


@pytest.mark.parametrize("lambda_cost", [0.0, 1.0])
def test_raising_a_class_cost_raises_its_gradient_share(lambda_cost):
    equal_p, equal_u = gradient_norms(1, lambda_cost)
    assert equal_p == pytest.approx(equal_u, rel=1e-6)
    high_p, high_u = gradient_norms(10, lambda_cost)
    assert high_p / (high_p + high_u) > 0.85 > equal_p / (equal_p + equal_u)
    if lambda_cost == 0:
        assert high_p / high_u == pytest.approx(10, rel=1e-5)


class TwoConvs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 1, (1, 4), bias=False)
        self.b = nn.Conv2d(1, 1, (1, 4), bias=False)
        with torch.no_grad():
            self.a.weight.copy_(torch.tensor([0.0, 0.0, 2.0, -2.0]).view(1, 1, 1, 4))
            self.b.weight.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 1, 1, 4))


def test_minmax_stats_of_a_synthetic_tensor_are_exact():
    a, b = minmax_stats(TwoConvs())
    # a = [0, 0, 2, -2]: max 2, half below 0.002, mean 0, variance 2, fourth moment 8 → kurtosis 8/4 = 2
    assert a == {"layer": "a", "n": 4, "near_zero_fraction": 0.5, "max_abs": 2.0, "kurtosis": 2.0}
    # b = [1, 2, 3, 4]: mean 2.5, variance 1.25, fourth moment (2·1.5⁴ + 2·0.5⁴)/4 = 2.5625 → 2.5625/1.5625 = 1.64
    assert b["near_zero_fraction"] == 0.0 and b["max_abs"] == 4.0 and b["kurtosis"] == pytest.approx(1.64, abs=1e-12)


def test_minmax_penalty_pulls_all_but_the_top_q():
    model = TwoConvs()
    # q = 0.25: quantile_0.75 of [0,0,2,2] is 2 (nothing below but zeros) → 0; of [1,2,3,4] it is 3.25 → 1+2+3 = 6
    assert minmax_penalty(model, 0.5, 0.25).item() == pytest.approx(0.5 * 6)
    penalty = minmax_penalty(model, 1.0, 0.25)
    penalty.backward()
    assert torch.equal(model.b.weight.grad.flatten(), torch.tensor([1.0, 1.0, 1.0, 0.0]))


def test_the_loss_adds_the_minmax_penalty_when_on():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Flatten(), nn.Linear(16, K))
    x, y, x_adv = batch()
    off = recipe(minmax_mu=0).loss(model, x, y, x_adv)
    on = recipe(minmax_mu=5e-4, minmax_top_q=0.05).loss(model, x, y, x_adv)
    # by hand: one conv with 12 distinct weights; quantile_0.95 lies between the two largest |w|, so every weight
    # but the largest is pulled: μ·(Σ|w| − max|w|)
    magnitude = model[0].weight.detach().abs().flatten()
    assert len(magnitude) == 12 and len(magnitude.unique()) == 12
    expected = 5e-4 * (magnitude.sum() - magnitude.max()).item()
    assert (on - off).item() == pytest.approx(
        expected, abs=1e-6
    ) and expected > 1e-4  # float32 losses of ≈ 2: ≈ 1e-7 noise


def test_minmax_summary_says_whether_the_property_appeared():
    before = [{"near_zero_fraction": 0.01, "max_abs": 0.5, "kurtosis": 3.0}] * 3
    grown = [{"near_zero_fraction": 0.4, "max_abs": 0.9, "kurtosis": 9.0}] * 3
    assert minmax_summary(before, grown).startswith("Min-Max property appeared")
    assert minmax_summary(before, before).startswith("Min-Max property did not appear")


def test_yaml_loads_and_bad_values_are_user_errors():
    assert REGISTRY["cost-sensitive"] is CostSensitive
    r = load_recipe("cost-sensitive")
    assert r.config.protected == (3, 5) and r.config.cost == 10 and r.config.base == "pgd-at" and r.interpretation
    r = load_recipe("cost-sensitive", parse_overrides(["protected=[1,2]", "base=mart", "minmax_mu=5e-4"]))
    assert r.config.protected == (1, 2) and r.config.base == "mart" and r.config.minmax_mu == 5e-4
    for bad, named in (
        (["costt=3"], "'costt'"),
        (["protected=[-1]"], "protected"),
        (["protected=[]"], "protected"),
        (["base=awp"], "base='awp'"),
        (["minmax_top_q=2"], "minmax_top_q"),
    ):
        with pytest.raises(UserError, match=named):
            load_recipe("cost-sensitive", parse_overrides(bad))
    with pytest.raises(UserError, match="below the model's"):
        recipe(protected=[9]).loss(tiny_model(), *batch())
    assert dataclasses.replace(r.config).to_dict()["protected"] == [1, 2]


def test_report_extra_has_minmax_before_and_after_computed_by_hand():
    before, after = TwoConvs(), TwoConvs()
    with torch.no_grad():
        after.b.weight.copy_(torch.tensor([0.0, 0.0, 0.0, 8.0]).view(1, 1, 1, 4))
    section = recipe(minmax_mu=5e-4, minmax_top_q=0.1).report_extra(before, after)["minmax"]
    a = {"layer": "a", "n": 4, "near_zero_fraction": 0.5, "max_abs": 2.0, "kurtosis": 2.0}  # as in the test above
    assert section["before"][0] == a and section["after"][0] == a  # layer a did not change
    b_before, b_after = section["before"][1], section["after"][1]
    assert (b_before["layer"], b_before["near_zero_fraction"], b_before["max_abs"]) == ("b", 0.0, 4.0)
    assert b_before["kurtosis"] == pytest.approx(1.64, abs=1e-12)
    # b = [0, 0, 0, 8]: 3 of 4 below 1e-3·8; mean 2, centred [-2, -2, -2, 6], variance 48/4 = 12,
    # fourth moment (3·16 + 1296)/4 = 336 → kurtosis 336/144 = 7/3
    assert (b_after["layer"], b_after["n"], b_after["near_zero_fraction"], b_after["max_abs"]) == ("b", 4, 0.75, 8.0)
    assert b_after["kurtosis"] == pytest.approx(7 / 3, abs=1e-12)
    # medians over the two layers: near-zero [0.5, 0] → 0.25 and [0.5, 0.75] → 0.625; max|w| 3 → 5; kurtosis 1.82 → 13/6
    assert section["summary"] == (
        "Min-Max property appeared: median near-zero fraction 0.2500 → 0.6250, median max|w| 3 → 5, "
        "median kurtosis 1.82 → 2.17 over 2 conv layers"
    )
    assert section["mu"] == 5e-4 and section["top_q"] == 0.1


def test_harden_report_carries_the_minmax_section(digits_model_path, tmp_path):
    import json

    from hardenctl.cli import main

    out = tmp_path / "run"
    args = [
        "harden",
        str(digits_model_path),
        "--recipe",
        "cost-sensitive",
        "--data",
        "digits-train",
        "--epochs",
        "1",
        "--lr",
        "0.02",
        "--set",
        "eps=0.1",
        "--set",
        "attack_alpha=0.05",
        "--set",
        "attack_steps=2",
        "--set",
        "augment=none",
        "--set",
        "minmax_mu=5e-4",
        "--set",
        "protected=[3]",
        "--set",
        "monitor_n=32",
        "--eval-data",
        "digits-test",
        "--suite",
        "quick",
        "--eps",
        "0.1",
        "--eval-n",
        "32",
        "--device",
        "cpu",
        "--out",
        str(out),
        "--quiet",
    ]
    assert main(args) == 0
    report = json.loads((out / "report.json").read_text())
    minmax = report["hardened"]["extra"]["minmax"]
    from hardenctl.models import load_model

    convs = [name for name, m in load_model(digits_model_path).named_modules() if isinstance(m, nn.Conv2d)]
    assert (
        [r["layer"] for r in minmax["before"]] == [r["layer"] for r in minmax["after"]] == convs
    )  # every conv layer, in order
    assert minmax["summary"].startswith("Min-Max property")
    assert report["interpretation"].startswith("ours") and minmax["summary"] in (out / "report.md").read_text()
    for side in ("input", "hardened"):
        assert report[side]["extra"]["protected"]["classes"] == [3] and report[side]["extra"]["protected"]["cost"] == 10


def test_every_parameter_is_documented_and_ours_is_marked():
    from hardenctl.recipes import describe, recipe_path

    cls, parameters = describe("cost-sensitive")
    assert cls is CostSensitive and all(p.meaning for p in parameters), [p.key for p in parameters if not p.meaning]
    text = recipe_path("cost-sensitive").read_text()
    for key in ("protected", "cost", "lambda_cost", "adversarial", "base", "minmax_mu", "minmax_top_q"):
        assert "[ours]" in next(p.meaning for p in parameters if p.key == key)
    assert "OUR design" in text
    import hardenctl.recipes.cost_sensitive as module

    assert "[ours]" in module.__doc__ and "ours" in CostSensitive.interpretation


def test_harden_resolves_protected_class_names_against_the_training_data(digits_model_path, tmp_path):
    from hardenctl import api
    from hardenctl.data import ArrayDataset, load_dataset

    words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    digits = load_dataset("digits-train").head(256)
    named = ArrayDataset(digits.x, digits.y, words, "named digits")
    settings = dict(
        data=named,
        eval_data=load_dataset("digits-test").head(32),
        epochs=1,
        eval_options={"suite": "quick", "eps": 0.1},
        eval_n=32,
        device="cpu",
    )
    overrides = {"protected": ["three", 5], "attack_steps": 1, "batch_size": 64, "monitor_n": 32, "eps": 0.1}
    result = api.harden(
        digits_model_path, recipe="cost-sensitive", out_dir=tmp_path / "ok", overrides=overrides, **settings
    )
    assert result.report.recipe_config["protected"] == [3, 5]
    assert result.report.hardened.extra["protected"]["classes"] == [3, 5]
    assert "protected:\n- 3\n- 5" in (tmp_path / "ok" / "recipe.yaml").read_text()
    with pytest.raises(UserError, match="unknown protected class 'tiger'"):
        api.harden(
            digits_model_path,
            recipe="cost-sensitive",
            out_dir=tmp_path / "bad",
            overrides={**overrides, "protected": ["tiger"]},
            **settings,
        )
    assert not (tmp_path / "bad").exists()
