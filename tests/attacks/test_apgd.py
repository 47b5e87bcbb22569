"""APGD-CE / APGD-T: bounds, strength against PGD, DLR vs saturated softmax, hygiene."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import hardenctl.attacks.apgd as apgd_module
from hardenctl.attacks import APGDCE, APGDT, PGD, build_attack
from hardenctl.attacks.apgd import checkpoints
from hardenctl.errors import UserError

ATTACKS = [APGDCE, APGDT]


def test_checkpoint_schedule_matches_paper():
    # p = 0, .22, .41, .57, .70, .80, .87, .93, .99 of 100 iterations
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert checkpoints(10) == list(range(2, 11))


@pytest.mark.parametrize("norm,eps", [("linf", 0.035), ("l2", 0.4)])
def test_apgd_ce_at_least_as_strong_as_pgd(model, big_test_data, accuracy, norm, eps):
    """Summed over two seeds: on a single run either attack can win or lose one point to
    its random start (the reference APGD behaves the same), so compare totals."""
    x, y = big_test_data
    pgd_acc = apgd_acc = 0.0
    for seed in (0, 1):
        torch.manual_seed(seed)
        pgd_acc += accuracy(model, PGD(eps, norm, steps=20)(model, x, y), y)
        torch.manual_seed(seed)
        apgd_acc += accuracy(model, APGDCE(eps, norm, steps=50)(model, x, y), y)
    assert accuracy(model, x, y) > 0.9
    assert pgd_acc < 2 * 0.5, "eps too small for this comparison to mean anything"
    assert apgd_acc <= pgd_acc


def test_apgd_t_sees_through_saturated_softmax(saturated_model, test_data, accuracy):
    x, y = test_data
    eps = 0.04
    ce, pgd, targeted = APGDCE(eps, steps=30), PGD(eps, steps=20), APGDT(eps, steps=30)
    torch.manual_seed(0)
    ce_acc = accuracy(saturated_model, ce(saturated_model, x, y), y)
    pgd_acc = accuracy(saturated_model, pgd(saturated_model, x, y), y)
    t_acc = accuracy(saturated_model, targeted(saturated_model, x, y), y)
    # CE gradients are exactly zero, so the CE attacks cannot move and report the model robust...
    assert ce_acc >= 0.9 and pgd_acc >= 0.9
    assert ce.gradient_stats.zero > 0 and pgd.gradient_stats.zero > 0
    # ...while the scale-invariant DLR loss still points the way.
    assert t_acc <= 0.25
    assert targeted.gradient_stats.zero < ce.gradient_stats.zero


class Bowl(nn.Module):
    """Two logits: −||x − c||² and 1, so with y = 1 the CE loss peaks at x = c and never fools."""

    def __init__(self, c: torch.Tensor):
        super().__init__()
        self.c = c

    def forward(self, x):
        z0 = -((x - self.c) ** 2).flatten(1).sum(1)
        return torch.stack([z0, torch.ones_like(z0)], dim=1)


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 0.3)])
def test_step_size_halving_converges_to_interior_maximum(norm, eps):
    """A fixed step of 2ε would oscillate around an optimum inside the ball; only the
    checkpoint halving (restarting from the best point) lets APGD settle on it."""
    torch.manual_seed(0)
    x = 0.3 + 0.4 * torch.rand(4, 1, 4, 4)
    if norm == "linf":
        c = x + eps * (torch.rand_like(x) * 1.4 - 0.7)
    else:
        d = torch.randn_like(x)
        c = x + 0.6 * eps * d / d.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    y = torch.ones(4, dtype=torch.long)
    x_adv = APGDCE(eps, norm, steps=100)(Bowl(c), x, y)
    err = (x_adv - c).flatten(1)
    assert err.abs().max() < eps / 40
    assert err.norm(dim=1).max() < eps / 40


def test_apgd_t_targets_are_the_top_wrong_classes(model, test_data, n_classes, monkeypatch):
    x, y = test_data
    x, y = x[:8], y[:8]
    seen: list[torch.Tensor] = []
    original = apgd_module.dlr_targeted

    def recording(logits, labels, target):
        if not seen or seen[-1] is not target:
            seen.append(target)
        return original(logits, labels, target)

    monkeypatch.setattr(apgd_module, "dlr_targeted", recording)
    APGDT(1e-5, steps=2, n_target_classes=9)(model, x, y)  # tiny eps: nothing is fooled
    assert len(seen) == n_classes - 1  # capped at num_classes − 1
    with torch.no_grad():
        wrong = model(x).scatter(1, y[:, None], float("-inf"))
    expected = wrong.argsort(dim=1, descending=True)[:, : n_classes - 1]
    assert torch.equal(torch.stack(seen, dim=1), expected)


@pytest.mark.parametrize("cls", ATTACKS)
def test_model_mode_and_bn_stats_restored(model, test_data, cls):
    x, y = test_data
    model.train()
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    cls(0.03, steps=5)(model, x, y)
    assert model.training and model.bn.training
    for k, v in model.named_buffers():
        assert torch.equal(v, buffers[k]), k
    model.eval()
    cls(0.03, steps=5)(model, x, y)
    assert not model.training


@pytest.mark.parametrize("cls", ATTACKS)
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_eps_zero_returns_input(model, test_data, cls, norm):
    x, y = test_data
    assert torch.equal(cls(0.0, norm, steps=5)(model, x, y), x)


def test_apgd_t_needs_four_classes():
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    x, y = torch.rand(2, 1, 4, 4), torch.zeros(2, dtype=torch.long)
    with pytest.raises(UserError):
        APGDT(0.1, steps=2)(model, x, y)


def test_registry_builds_both():
    ce = build_attack("apgd-ce", eps=0.1, norm="l2", steps=7, loss="dlr")
    t = build_attack("apgd-t", eps=0.1, n_target_classes=3, restarts=2)
    assert isinstance(ce, APGDCE) and ce.steps == 7 and ce.norm == "l2" and ce.loss == "dlr"
    assert isinstance(t, APGDT) and t.n_target_classes == 3 and t.restarts == 2 and t.steps == 100
