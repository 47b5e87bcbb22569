"""APGD-CE / APGD-T: the momentum update, strength against PGD, DLR vs saturated softmax, hygiene."""

from __future__ import annotations

import math

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
    targets = torch.stack(seen, dim=1)  # (points, passes)
    with torch.no_grad():
        clean = model(x)
    # Every wrong class once, none the true one, in order of decreasing clean logit.
    assert (targets != y[:, None]).all()
    assert all(len(set(row.tolist())) == n_classes - 1 for row in targets)
    ranked_logits = clean.gather(1, targets)
    assert (ranked_logits[:, :-1] >= ranked_logits[:, 1:]).all()


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


def test_momentum_step_linf_by_hand():
    """x_{k+1} = P(x_k + α(z − x_k) + (1 − α)(x_k − x_{k−1})), z = P(x_k + η·sign(g)), α = 0.75,
    ε = 0.1, η = 0.05, worked out per coordinate (P: clip to [x ± ε] then to [0, 1])."""
    x = torch.tensor([0.5, 0.5, 0.5, 0.02, 0.5]).view(1, 1, 1, 5)
    x_prev = torch.tensor([0.45, 0.5, 0.52, 0.05, 0.5]).view_as(x)
    x_k = torch.tensor([0.55, 0.58, 0.48, 0.0, 0.54]).view_as(x)
    grad = torch.tensor([-1.0, 2.0, 0.3, -1.0, 0.0]).view_as(x)
    expected = torch.tensor(
        [
            0.55 + 0.75 * (0.50 - 0.55) + 0.25 * (0.55 - 0.45),  # 0.5375: momentum pulls back up
            0.6,  # 0.58 + 0.75·0.02 + 0.25·0.08 = 0.615, clipped to x + ε
            0.48 + 0.75 * (0.53 - 0.48) + 0.25 * (0.48 - 0.52),  # 0.5075
            0.0,  # z = 0 (box); 0 + 0.25·(−0.05) < 0, clipped to the box
            0.54 + 0.25 * (0.54 - 0.50),  # zero gradient: z = x_k, only momentum moves it: 0.55
        ]
    ).view_as(x)
    attack = APGDCE(0.1)
    assert attack.momentum == 0.75  # the reference's fixed value
    got = attack.momentum_step(x_k, x_prev, grad, torch.tensor([0.05]), x)
    assert torch.allclose(got, expected, atol=1e-6)
    # The first step has no previous displacement: plain projected step.
    first = attack.momentum_step(x_k, x_prev, grad, torch.tensor([0.05]), x, first=True)
    assert torch.allclose(first, torch.tensor([0.5, 0.6, 0.53, 0.0, 0.54]).view_as(x), atol=1e-6)


@pytest.mark.parametrize("eta", [0.08, 0.16])
def test_momentum_step_l2_by_hand(eta):
    """Two pixels, ε = 0.1, x_k − x = (0.06, 0), x_{k−1} = x, gradient along the second pixel.
    z − x = (0.06, η), rescaled to norm ε when longer (η = 0.16); the result stays inside."""
    x = torch.tensor([0.5, 0.5]).view(1, 1, 1, 2)
    x_k = x + torch.tensor([0.06, 0.0]).view_as(x)
    grad = torch.tensor([0.0, 3.0]).view_as(x)
    zx, zy = 0.06, eta
    scale = min(1.0, 0.1 / math.hypot(zx, zy))
    zx, zy = zx * scale, zy * scale
    dx = 0.06 + 0.75 * (zx - 0.06) + 0.25 * 0.06
    dy = 0.75 * zy
    assert math.hypot(dx, dy) < 0.1  # inside the ball: no final projection
    got = APGDCE(0.1, "l2").momentum_step(x_k, x.clone(), grad, torch.tensor([eta]), x)
    assert torch.allclose(got - x, torch.tensor([dx, dy]).view_as(x), atol=1e-6)


class Recording(nn.Module):
    """Wraps a model and keeps every input it is differentiated at (the APGD iterates)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.iterates: list[torch.Tensor] = []

    def forward(self, x):
        if x.requires_grad:
            self.iterates.append(x.detach().clone())
        return self.inner(x)


@pytest.mark.parametrize("norm,eps", [("linf", 0.03), ("l2", 0.3)])
def test_apgd_loop_applies_momentum(model, test_data, norm, eps):
    """The second iterate of a real run, recomputed independently from the first two and the
    model's gradient at x_1 (η = 2ε until the first checkpoint, at 2 of 10 steps).

    Points leave the working batch once fooled, so x_1 holds the points x_0 did not fool
    and x_2 those neither fooled; the recomputation follows the same rows."""
    x, y = test_data
    with torch.no_grad():
        attacked = model(x).argmax(1) == y
    x, y = x[attacked], y[attacked]
    recording = Recording(model).eval()  # train() on the wrapper would put BN in batch-statistics mode
    attack = APGDCE(eps, norm, steps=10)
    torch.manual_seed(0)
    attack(recording, x, y)
    assert attack.gradient_stats.zero == 0  # no extra diagnostic passes among the iterates
    x0, x1, x2 = recording.iterates[:3]
    with torch.no_grad():
        left = model(x0).argmax(1) == y
        x0, x, y = x0[left], x[left], y[left]
        assert x1.shape == x0.shape
        left = model(x1).argmax(1) == y
        x0, x1, x, y = x0[left], x1[left], x[left], y[left]
    assert 0 < x2.shape[0] == x1.shape[0]

    x_var = x1.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(nn.functional.cross_entropy(model(x_var), y, reduction="sum"), x_var)

    def project(p):
        d = p - x
        if norm == "linf":
            d = d.clamp(-eps, eps)
        else:
            d = d * (eps / d.flatten(1).norm(dim=1).clamp_min(1e-12)).clamp(max=1).view(-1, 1, 1, 1)
        return (x + d).clamp(0, 1)

    direction = g.sign() if norm == "linf" else g / g.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    z = project(x1 + 2 * eps * direction)
    expected = project(x1 + 0.75 * (z - x1) + 0.25 * (x1 - x0))
    assert (x1 - x0).abs().max() > eps / 10  # the momentum term is not negligible
    assert torch.allclose(x2, expected, atol=1e-5)
