"""PGD and FGSM against closed-form optima on a linear model, plus bounds and restarts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hardenctl.attacks import FGSM, PGD


def linear_problem(eps: float, interior: bool):
    """Points x_i, labels y_i and a 2-class affine model f(x_i) = W x_i + b_i.

    For CE on two classes the loss only depends on d·x with d = w_y − w_other, so the
    optimum over the L∞ ball ∩ box is clip(x − ε·sign(d)) and over the L2 ball (box not
    binding) is x − ε·d/||d||. Each b_i gives point i a margin larger than any
    ε-perturbation can remove, so the attack never stops on an earlier, misclassified
    iterate and must return the constrained optimum itself.
    """
    torch.manual_seed(0)
    lin = nn.Linear(16, 2)
    x = 0.3 + 0.4 * torch.rand(6, 1, 4, 4) if interior else torch.rand(6, 1, 4, 4)
    if not interior:
        x[:, :, 0] = 0.02  # within ε of the box: the clip binds
        x[:, :, 1] = 0.99
    y = torch.tensor([0, 1, 0, 1, 0, 1])
    with torch.no_grad():
        d = lin.weight[y] - lin.weight[1 - y]
        gap = (d * x.flatten(1)).sum(1) + lin.bias[y] - lin.bias[1 - y]
        worst = eps * torch.maximum(d.abs().sum(1), d.norm(dim=1))
        shift = (4 + worst - gap).clamp_min(0)  # final margin ≥ 4, p_y < 1: gradients stay finite and nonzero
        bias = torch.zeros(6, 2).scatter(1, y[:, None], shift[:, None])
    return AffinePerPoint(lin, bias), x, y, d.view_as(x)


class AffinePerPoint(nn.Module):
    """W x + b + bias[i] for the i-th point of the batch (the batch is always the same 6 points)."""

    def __init__(self, lin: nn.Linear, bias: torch.Tensor):
        super().__init__()
        self.lin = lin
        self.register_buffer("bias", bias)

    def forward(self, x):
        assert x.shape[0] == self.bias.shape[0]
        return self.lin(x.flatten(1)) + self.bias


@pytest.mark.parametrize("random_start", [True, False])
@pytest.mark.parametrize("restarts", [1, 3])
def test_linf_pgd_reaches_clipped_corner(random_start, restarts):
    eps = 0.1
    model, x, y, d = linear_problem(eps, interior=False)
    x_adv = PGD(eps, "linf", steps=20, restarts=restarts, random_start=random_start)(model, x, y)
    expected = (x - eps * d.sign()).clamp(0, 1)
    assert torch.allclose(x_adv, expected, atol=1e-6)


@pytest.mark.parametrize("random_start,steps,atol", [(False, 10, 1e-6), (True, 100, 1e-4)])
def test_l2_pgd_reaches_gradient_direction(random_start, steps, atol):
    eps = 0.2
    model, x, y, d = linear_problem(eps, interior=True)
    x_adv = PGD(eps, "l2", steps=steps, random_start=random_start)(model, x, y)
    unit = d / d.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    expected = x - eps * unit  # x in [0.3, 0.7] and ε = 0.2: the box does not bind
    assert torch.allclose(x_adv, expected, atol=atol)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fgsm_is_one_full_step(norm):
    eps = 0.1
    model, x, y, d = linear_problem(eps, interior=norm == "l2")
    x_adv = FGSM(eps, norm)(model, x, y)
    if norm == "linf":
        expected = (x - eps * d.sign()).clamp(0, 1)
    else:
        expected = x - eps * d / d.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    assert torch.allclose(x_adv, expected, atol=1e-6)


def test_restarts_never_weaken_pgd(model, test_data, accuracy):
    """Restart 0 draws the same start under the same seed; later restarts can only add fooled points."""
    x, y = test_data
    torch.manual_seed(0)
    one = accuracy(model, PGD(0.03, steps=10, restarts=1)(model, x, y), y)
    torch.manual_seed(0)
    three = accuracy(model, PGD(0.03, steps=10, restarts=3)(model, x, y), y)
    assert 0 < one < 1
    assert three <= one


@pytest.mark.parametrize("cls", [PGD, FGSM])
def test_eps_zero_returns_input(model, test_data, cls):
    x, y = test_data
    assert torch.equal(cls(0.0)(model, x, y), x)
