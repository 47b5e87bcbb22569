"""EOT: on a randomised model whose single draws mislead, averaging draws is what makes attacks work."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hardenctl.attacks import APGDCE, PGD

SLOPES = (-1.0, -1.0, -1.0, -1.0, 9.0)  # mean +1, but four draws in five have the opposite sign


class CyclicSlope(nn.Module):
    """A randomised two-class model: logits [0, r·(mean(x) − c_i) − m] for point i, where the
    slope r of each forward pass cycles through SLOPES.

    In expectation (r = 1) the wrong class gains as the pixels brighten, but four draws in
    five say the opposite. Any five consecutive draws hold the cycle exactly once, so an
    average over five draws is the exact expectation whatever the phase.
    """

    def __init__(self, centre: torch.Tensor, offset: float):
        super().__init__()
        self.register_buffer("centre", centre)
        self.offset = offset
        self.draws = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = SLOPES[self.draws % len(SLOPES)]
        self.draws += 1
        return self.logits(x, r)

    def logits(self, x: torch.Tensor, r: float) -> torch.Tensor:
        z1 = r * (x.flatten(1).mean(1) - self.centre) - self.offset
        return torch.stack([torch.zeros_like(z1), z1], dim=1)


def problem(offset: float) -> tuple[CyclicSlope, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    x = 0.3 + 0.4 * torch.rand(4, 1, 4, 4)  # interior: the box never binds at ε = 0.1
    return CyclicSlope(x.flatten(1).mean(1), offset), x, torch.zeros(4, dtype=torch.long)


def test_eot_gradient_is_the_expected_gradient():
    """Loss z_1 is linear in r, so its expected input gradient is E[r]/16 = +1/16 per pixel."""
    model, x, y = problem(offset=0.05)
    loss = lambda logits, labels: logits[:, 1]  # noqa: E731
    single_loss, single, _ = PGD(0.1, eot_samples=1).gradient(model, x, y, loss)
    assert torch.allclose(single, torch.full_like(x, -1 / 16))  # one draw points the wrong way
    mean_loss, averaged, mean_logits = PGD(0.1, eot_samples=5).gradient(model, x, y, loss)
    assert torch.allclose(averaged, torch.full_like(x, 1 / 16), atol=1e-6)
    assert torch.allclose(mean_loss, torch.full((4,), -0.05), atol=1e-6)  # E[z_1] at x: −m
    assert torch.allclose(mean_logits, model.logits(x, 1.0), atol=1e-6)


@pytest.mark.parametrize(
    "make",
    [lambda k: PGD(0.1, eot_samples=k, steps=20, random_start=False), lambda k: APGDCE(0.1, eot_samples=k, steps=20)],
    ids=["pgd", "apgd-ce"],
)
def test_only_the_eot_attack_fools_the_model_in_expectation(make):
    """Cross-entropy on class 0: every draw's gradient has the sign of r, and the average over
    a cycle points up. A point is fooled in expectation once mean(x) − c > m = 0.05, which
    needs more than half of ε = 0.1 in the right direction."""
    model, x, y = problem(offset=0.05)
    torch.manual_seed(0)
    x_single = make(1)(model, x, y)
    torch.manual_seed(0)
    x_eot = make(5)(model, x, y)
    with torch.no_grad():
        assert (model.logits(x_single, 1.0).argmax(1) == y).all()  # single draws walk the wrong way
        assert (model.logits(x_eot, 1.0).argmax(1) != y).all()  # the averaged gradient does not
