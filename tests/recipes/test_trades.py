"""TRADES: β = 0 is clean CE, the attack maximises KL(p(x)‖p(x')), the official formula."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hardenctl.recipes import load_recipe
from hardenctl.recipes.trades import Trades, trades_loss


def official_trades_loss(logits_nat, logits_adv, y, beta):
    """The training-loss half of trades_loss() in github.com/yaodongyu/TRADES/trades.py."""
    criterion_kl = nn.KLDivLoss(reduction="sum")
    loss_natural = F.cross_entropy(logits_nat, y)
    loss_robust = (1.0 / len(y)) * criterion_kl(F.log_softmax(logits_adv, dim=1), F.softmax(logits_nat, dim=1))
    return loss_natural + beta * loss_robust


def small_problem():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 4))
    x = torch.rand(10, 1, 4, 4)
    return model, x, (x + 0.2 * torch.randn_like(x)).clamp(0, 1), torch.randint(0, 4, (10,))


def test_beta_zero_equals_clean_cross_entropy():
    model, x, x_adv, y = small_problem()
    recipe = load_recipe("trades", {"beta": 0})
    torch.testing.assert_close(recipe.loss(model, x, y, x_adv), F.cross_entropy(model(x), y))


def test_equals_the_official_formula_in_value_and_gradient():
    model, x, x_adv, y = small_problem()
    recipe = load_recipe("trades")
    assert isinstance(recipe, Trades) and recipe.config.beta == 6.0
    ours = recipe.loss(model, x, y, x_adv)
    theirs = official_trades_loss(model(x), model(x_adv), y, 6.0)
    torch.testing.assert_close(ours, theirs)
    for got, want in zip(
        torch.autograd.grad(ours, list(model.parameters())), torch.autograd.grad(theirs, list(model.parameters()))
    ):
        torch.testing.assert_close(got, want)


def test_kl_is_zero_at_the_clean_point_and_the_target_is_not_detached():
    model, x, _, y = small_problem()
    logits = model(x)
    torch.testing.assert_close(trades_loss(logits, logits, y, 6.0), F.cross_entropy(logits, y), rtol=0, atol=1e-6)
    logits_adv = logits + torch.randn_like(logits)
    full = torch.autograd.grad(trades_loss(logits, logits_adv.detach(), y, 6.0), logits)[0]
    ce_only = torch.autograd.grad(F.cross_entropy(logits, y), logits)[0]
    assert (full - ce_only).abs().max() > 1e-3  # the gradient flows through p(x) in the KL


def test_attack_loss_is_kl_to_the_clean_prediction():
    model, x, x_adv, y = small_problem()
    loss_fn = load_recipe("trades").attack_loss(model, x, y)
    p = F.softmax(model(x), dim=1)
    q_log = F.log_softmax(model(x_adv), dim=1)
    torch.testing.assert_close(loss_fn(model(x_adv), y), (p * (p.log() - q_log)).sum(1))
    torch.testing.assert_close(loss_fn(model(x), y), torch.zeros(10), rtol=0, atol=1e-6)


def test_official_defaults_in_the_yaml():
    c = load_recipe("trades", {"profile": "paper"}).config
    assert (c.beta, c.lr, c.weight_decay, c.epochs, c.eps, c.attack_steps, c.attack_alpha) == (
        6.0,
        0.1,
        2e-4,
        76,
        0.031,
        10,
        0.007,
    )
    assert c.attack_start == "normal" and [round(m * c.epochs) for m in c.milestones] == [74]  # 1-based epoch 75
