"""Tiny models and synthetic data for the attack tests (CPU, a few seconds in all)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

N_CLASSES = 5
SHAPE = (3, 8, 8)


def make_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images in [0, 1] near one of N_CLASSES fixed class prototypes (separable, not trivially)."""
    g = torch.Generator().manual_seed(1234)
    protos = 0.5 + 0.12 * torch.randn(N_CLASSES, *SHAPE, generator=g)
    g.manual_seed(seed)
    y = torch.randint(0, N_CLASSES, (n,), generator=g)
    x = protos[y] + 0.08 * torch.randn(n, *SHAPE, generator=g)
    return x.clamp(0, 1), y


class SmallNet(nn.Module):
    """conv → BN → ReLU → pool → linear: small, but has BN to check train/eval handling."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(32, N_CLASSES)

    def forward(self, x):
        return self.fc(self.pool(torch.relu(self.bn(self.conv(x)))).flatten(1))


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


@pytest.fixture(scope="session")
def accuracy():
    """``accuracy(model, x, y)``: fraction of ``x`` the model classifies as ``y``."""
    return _accuracy


@pytest.fixture(scope="session")
def n_classes() -> int:
    return N_CLASSES


@pytest.fixture(scope="session")
def trained_model() -> SmallNet:
    """SmallNet trained for a few dozen Adam steps on make_data; returned in eval mode."""
    torch.manual_seed(0)
    model = SmallNet()
    x, y = make_data(512, seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(60):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


@pytest.fixture
def model(trained_model) -> SmallNet:
    """A fresh copy per test, so no test can leak state into another."""
    return copy.deepcopy(trained_model)


@pytest.fixture
def saturated_model(trained_model) -> SmallNet:
    """The trained model with its last layer scaled by 1e4: same predictions, but softmax
    saturates to exactly 0/1 in float32, so cross-entropy input gradients are zero."""
    model = copy.deepcopy(trained_model)
    with torch.no_grad():
        model.fc.weight.mul_(1e4)
        model.fc.bias.mul_(1e4)
    return model


@pytest.fixture
def test_data() -> tuple[torch.Tensor, torch.Tensor]:
    return make_data(64, seed=2)


@pytest.fixture
def big_test_data() -> tuple[torch.Tensor, torch.Tensor]:
    """128 points, for comparisons between attacks that a single point must not decide."""
    return make_data(128, seed=2)
