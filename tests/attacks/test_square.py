"""Square Attack: bounds, strength without gradients, query budget."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from hardenctl.attacks import PGD, Square, build_attack
from hardenctl.attacks.square import square_fraction


class CountingModel(nn.Module):
    """Wraps a model and records the batch size of every forward pass."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.batch_sizes: list[int] = []

    def forward(self, x):
        self.batch_sizes.append(x.shape[0])
        return self.inner(x)


@pytest.mark.parametrize("norm,eps,max_acc", [("linf", 0.05, 0.3), ("l2", 1.0, 0.5)])
def test_lowers_accuracy_with_few_queries(model, test_data, accuracy, norm, eps, max_acc):
    x, y = test_data
    torch.manual_seed(0)
    assert accuracy(model, x, y) > 0.9
    assert accuracy(model, Square(eps, norm, queries=300)(model, x, y), y) <= max_acc


def test_sees_through_saturated_softmax(saturated_model, test_data, accuracy):
    """Square only compares logit margins, so scaling the logits changes nothing for it."""
    x, y = test_data
    torch.manual_seed(0)
    pgd_acc = accuracy(saturated_model, PGD(0.05, steps=20)(saturated_model, x, y), y)
    square_acc = accuracy(saturated_model, Square(0.05, queries=300)(saturated_model, x, y), y)
    assert pgd_acc >= 0.9  # the gradient attack is blind here...
    assert square_acc <= 0.3  # ...the black-box one is not


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_query_budget_is_respected_and_used(model, test_data, norm):
    x, y = test_data
    counted = CountingModel(model)
    queries = 40
    Square(1e-4, norm, queries=queries)(counted, x, y)  # tiny eps: nothing is fooled
    # Each forward pass holds each point at most once, so passes bound queries per point.
    assert len(counted.batch_sizes) == queries
    assert max(counted.batch_sizes) <= x.shape[0]


def test_queries_only_unfooled_points_and_stops_early(model, test_data):
    x, y = test_data
    counted = CountingModel(model)
    queries = 200
    Square(0.15, queries=queries)(counted, x, y)  # large eps: everything falls quickly
    sizes = counted.batch_sizes
    assert len(sizes) < queries
    assert sizes == sorted(sizes, reverse=True)  # the active set only ever shrinks
    assert sum(sizes) < x.shape[0] * queries


def test_eot_averages_every_query(model, test_data):
    x, y = test_data
    counted = CountingModel(model)
    Square(1e-4, queries=10, eot_samples=3)(counted, x, y)
    assert len(counted.batch_sizes) == 30


def test_restarts_only_retry_unfooled_points(model, test_data):
    x, y = test_data
    counted = CountingModel(model)
    Square(1e-4, queries=10, restarts=3)(counted, x, y)
    assert len(counted.batch_sizes) == 30


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_eps_zero_returns_input(model, test_data, norm):
    x, y = test_data
    assert torch.equal(Square(0.0, norm, queries=20)(model, x, y), x)


def test_square_size_schedule():
    # p halves after iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000 of 10k
    assert square_fraction(0.8, 10, 10000) == 0.8
    assert square_fraction(0.8, 11, 10000) == 0.4
    assert square_fraction(0.8, 501, 10000) == 0.8 / 16
    assert square_fraction(0.8, 9999, 10000) == 0.8 / 512
    assert square_fraction(0.8, 3, 1000) == 0.4  # rescaled: iteration 3 of 1000 ~ 30 of 10k


def test_model_mode_restored_and_registry(model, test_data):
    x, y = test_data
    model.train()
    attack = build_attack("square", eps=0.05, queries=5, p_init=0.5)
    assert isinstance(attack, Square) and attack.queries == 5 and attack.p_init == 0.5
    attack(model, x, y)
    assert model.training
