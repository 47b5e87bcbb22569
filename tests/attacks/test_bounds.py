"""Every attack, both norms: the result lies in the ε-ball around x and in the [0, 1] box."""

from __future__ import annotations

import pytest
import torch

from hardenctl.attacks import APGDCE, APGDT, FGSM, PGD, Square

BUDGETS = {FGSM: {}, PGD: {"steps": 10}, APGDCE: {"steps": 10}, APGDT: {"steps": 10}, Square: {"queries": 100}}


@pytest.mark.parametrize("cls", list(BUDGETS), ids=lambda c: c.name)
@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 1.0)])
def test_result_in_eps_ball_and_box(model, n_classes, cls, norm, eps):
    torch.manual_seed(0)
    x = torch.rand(16, 3, 8, 8)
    x[:, :, :2] = x[:, :, :2].round()  # pixels at exactly 0 and 1, so the box binds
    y = torch.randint(0, n_classes, (16,))
    x_adv = cls(eps, norm, **BUDGETS[cls])(model, x, y)
    delta = (x_adv - x).flatten(1)
    if norm == "linf":
        assert delta.abs().max() <= eps + 1e-6
    else:
        assert delta.norm(dim=1).max() <= eps + 1e-5
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert x_adv.shape == x.shape
