"""MART's loss: the properties RECIPES.md lists, and equality with the official code's formula."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hardenctl.recipes import load_recipe
from hardenctl.recipes.mart import Mart, mart_loss, misclassification_weight, strongest_wrong_class


def official_mart_loss(logits, logits_adv, y, beta):
    """A transcription of mart_loss() in github.com/YisenWang/MART/mart.py after the attack."""
    kl = nn.KLDivLoss(reduction="none")
    batch_size = len(y)
    adv_probs = F.softmax(logits_adv, dim=1)
    tmp1 = torch.argsort(adv_probs, dim=1)[:, -2:]
    new_y = torch.where(tmp1[:, -1] == y, tmp1[:, -2], tmp1[:, -1])
    loss_adv = F.cross_entropy(logits_adv, y) + F.nll_loss(torch.log(1.0001 - adv_probs + 1e-12), new_y)
    nat_probs = F.softmax(logits, dim=1)
    true_probs = torch.gather(nat_probs, 1, (y.unsqueeze(1)).long()).squeeze()
    loss_robust = (1.0 / batch_size) * torch.sum(
        torch.sum(kl(torch.log(adv_probs + 1e-12), nat_probs), dim=1) * (1.0000001 - true_probs)
    )
    return loss_adv + float(beta) * loss_robust


def random_logits(seed: int, n: int = 16, classes: int = 10):
    g = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(n, classes, generator=g)).requires_grad_(True)
    logits_adv = (logits.detach() + torch.randn(n, classes, generator=g)).requires_grad_(True)
    return logits, logits_adv, torch.randint(0, classes, (n,), generator=g)


@pytest.mark.parametrize("seed", range(3))
def test_equals_the_official_code_in_value_and_gradient(seed):
    logits, logits_adv, y = random_logits(seed)
    ours = mart_loss(logits, logits_adv, y, beta=6.0)
    grads = torch.autograd.grad(ours, [logits, logits_adv])
    theirs = official_mart_loss(logits, logits_adv, y, beta=6.0)
    expected = torch.autograd.grad(theirs, [logits, logits_adv])
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-7)
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-8)


def test_beta_zero_is_ce_plus_the_wrong_class_term_and_at_least_ce():
    logits, logits_adv, y = random_logits(1)
    loss = mart_loss(logits, logits_adv, y, beta=0.0)
    probs = F.softmax(logits_adv, dim=1)
    other = probs.scatter(1, y[:, None], -1.0).amax(dim=1)  # max_{k≠y} p_k(x')
    ce = F.cross_entropy(logits_adv, y)
    torch.testing.assert_close(loss, ce - torch.log(1.0001 - other + 1e-12).mean())
    # −log(1.0001 − p) ≥ −log(1.0001) ≈ −1e-4: the extra term can only add (up to the guard)
    assert loss >= ce - 1.0001e-4
    assert loss > ce + 0.01  # and here, with confusable classes, it adds a real amount


def test_kl_term_is_zero_when_adversarial_equals_clean():
    logits, _, y = random_logits(2)
    with_kl = mart_loss(logits, logits, y, beta=6.0)
    without = mart_loss(logits, logits, y, beta=0.0)
    torch.testing.assert_close(with_kl, without, rtol=0, atol=1e-6)


def test_weight_is_one_minus_p_true_in_unit_interval():
    logits, _, y = random_logits(3, n=256)
    weight = misclassification_weight(logits, y)
    p_true = F.softmax(logits, dim=1).gather(1, y[:, None]).squeeze(1)
    torch.testing.assert_close(weight, 1 - p_true, rtol=0, atol=2e-7)
    confident = torch.tensor([[30.0, 0, 0], [0, 30.0, 0]])  # right with p ≈ 1, wrong with p_y ≈ 0
    torch.testing.assert_close(
        misclassification_weight(confident, torch.tensor([0, 0])), torch.tensor([0.0, 1.0]), rtol=0, atol=1e-6
    )
    wrong = logits.argmax(1) != y
    assert weight[wrong].mean() > weight[~wrong].mean()  # misclassified examples weigh more


def test_strongest_wrong_class_is_never_the_label():
    g = torch.Generator().manual_seed(4)
    probs = F.softmax(torch.randn(500, 10, generator=g), dim=1)
    y = torch.randint(0, 10, (500,), generator=g)
    y[:250] = probs[:250].argmax(1)  # half the points have the label as top-1
    probs[-5:] = 0.1  # exact ties
    wrong = strongest_wrong_class(probs, y)
    assert (wrong != y).all()
    expected = probs.scatter(1, y[:, None], -1.0).argmax(1)
    assert (probs.gather(1, wrong[:, None]) == probs.gather(1, expected[:, None])).all()


def test_gradient_reaches_theta_through_the_weight_and_the_kl_target():
    """Nothing is detached [code]: detaching the weight or p(x) in the KL changes the parameter gradient."""
    torch.manual_seed(0)
    model = nn.Linear(12, 5)
    x = torch.rand(32, 12)
    x_adv = x + 0.3 * torch.rand(32, 12)
    y = torch.randint(0, 5, (32,))

    def grad_of(detach_weight: bool, detach_target: bool):
        logits, logits_adv = model(x), model(x_adv)
        adv_probs = F.softmax(logits_adv, dim=1)
        nat_probs = F.softmax(logits, dim=1)
        target = nat_probs.detach() if detach_target else nat_probs
        weight = misclassification_weight(logits.detach() if detach_weight else logits, y)
        kl = F.kl_div(torch.log(adv_probs + 1e-12), target, reduction="none").sum(1)
        loss = F.cross_entropy(logits_adv, y) + 6.0 * (kl * weight).mean()
        return torch.autograd.grad(loss, model.weight)[0]

    logits, logits_adv = model(x), model(x_adv)
    full = torch.autograd.grad(
        mart_loss(logits, logits_adv, y, 6.0) - mart_loss(logits, logits_adv, y, 0.0) + F.cross_entropy(logits_adv, y),
        model.weight,
    )[0]
    torch.testing.assert_close(full, grad_of(False, False), rtol=1e-5, atol=1e-7)
    assert (full - grad_of(True, False)).abs().max() > 1e-4 * full.abs().max()
    assert (full - grad_of(False, True)).abs().max() > 1e-4 * full.abs().max()


def test_recipe_runs_clean_then_adversarial_forward_and_uses_beta():
    recipe = load_recipe("mart", {"beta": 2.5})
    assert isinstance(recipe, Mart) and recipe.config.beta == 2.5
    seen = []
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 5))
    model.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    x, x_adv, y = torch.rand(8, 1, 3, 4), torch.rand(8, 1, 3, 4), torch.randint(0, 5, (8,))
    loss = recipe.loss(model, x, y, x_adv)
    assert seen[0] is x and seen[1] is x_adv
    torch.testing.assert_close(loss, mart_loss(model(x), model(x_adv), y, 2.5))


def test_official_defaults_in_the_yaml():
    c = load_recipe("mart", {"profile": "paper"}).config
    assert (c.beta, c.lr, c.weight_decay, c.momentum, c.epochs, c.batch_size) == (6.0, 0.1, 7e-4, 0.9, 90, 128)
    assert (c.eps, c.attack_steps, c.attack_alpha, c.attack_start, c.attack_start_std) == (
        0.031,
        10,
        0.007,
        "normal",
        0.001,
    )
    assert [round(m * c.epochs) for m in c.milestones] == [74, 89]  # 1-based epochs 75 and 90
