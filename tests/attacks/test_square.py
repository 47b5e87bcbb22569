"""Square Attack: strength without gradients, query budget, restarts, and the reference's
window schedule and L2 update (``autoattack/square.py`` as AutoAttack runs it)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import hardenctl.attacks.square as square_module
from hardenctl.attacks import PGD, Square, build_attack
from hardenctl.attacks.square import square_fraction, window_side


class CountingModel(nn.Module):
    """Wraps a model and records the batch size of every forward pass."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.batch_sizes: list[int] = []

    def forward(self, x):
        self.batch_sizes.append(x.shape[0])
        return self.inner(x)


class NeverFooled(nn.Module):
    """Constant logits, class 0 far ahead: no proposal is ever accepted, the search runs to the end."""

    def forward(self, x):
        return torch.tensor([10.0, 0.0]).expand(x.shape[0], 2)


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
    assert sizes == sorted(sizes, reverse=True)  # the active set only ever shrinks...
    assert sizes[-1] < sizes[0]  # ...and does shrink: fooled points stop being queried


def test_eot_averages_every_query(model, test_data):
    x, y = test_data
    counted = CountingModel(model)
    Square(1e-4, queries=10, eot_samples=3)(counted, x, y)
    assert len(counted.batch_sizes) == 30


def test_restarts_only_retry_unfooled_points_and_keep_every_success(model, test_data, monkeypatch):
    """ε and budget chosen so one run fools about half the points (0.04, 10 queries)."""
    x, y = test_data
    runs: list[tuple[torch.Tensor, torch.Tensor]] = []  # (points attacked, their final margin)
    original = Square._run

    def recording(self, model_, x_run, y_run, streams=None):
        out = original(self, model_, x_run, y_run, streams)
        runs.append((x_run.clone(), out[1].clone()))
        return out

    monkeypatch.setattr(Square, "_run", recording)
    torch.manual_seed(0)
    once = Square(0.04, queries=10, restarts=1)(model, x, y)
    runs.clear()
    torch.manual_seed(0)
    thrice = Square(0.04, queries=10, restarts=3)(model, x, y)

    assert len(runs) == 3
    fooled = torch.zeros(len(x), dtype=torch.bool)
    for attacked, m in runs:
        assert torch.equal(attacked, x[~fooled])  # each restart attacks exactly the points still unfooled
        fooled[(~fooled).nonzero().squeeze(1)[m > 0]] = True
    with torch.no_grad():
        fooled_once = model(once).argmax(1) != y
        fooled_thrice = model(thrice).argmax(1) != y
    assert 0 < fooled_once.sum() < len(x)
    assert torch.equal(fooled_thrice, fooled)  # every success of any run is returned
    assert (fooled_thrice | ~fooled_once).all()  # run 0 is the single run, so never weaker...
    assert fooled_thrice.sum() > fooled_once.sum()  # ...and the restarts fooled more


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_eps_zero_returns_input(model, test_data, norm):
    x, y = test_data
    assert torch.equal(Square(0.0, norm, queries=20)(model, x, y), x)


def test_square_size_schedule():
    # p halves after iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000, whatever the budget
    assert square_fraction(0.8, 10, 5000) == 0.8
    assert square_fraction(0.8, 11, 5000) == 0.4
    assert square_fraction(0.8, 501, 100) == 0.8 / 16
    assert square_fraction(0.8, 4500, 5000) == 0.8 / 128
    assert square_fraction(0.8, 9999, 10000) == 0.8 / 512
    # opt-in rescaling reads them as fractions of 10k queries: 4500 of 5000 ~ 9000 of 10k
    assert square_fraction(0.8, 4500, 5000, rescale=True) == 0.8 / 512
    assert square_fraction(0.8, 3, 1000, rescale=True) == 0.4


def test_window_sides_match_the_reference_rounding():
    # L∞: round(sqrt(p·h·w)), at least 1; L2: at least 3 and odd. 32×32, p = 0.8 / 2^k.
    assert [window_side(0.8 / 2**k, 32, 32, "linf") for k in range(10)] == [29, 20, 14, 10, 7, 5, 4, 3, 2, 1]
    assert [window_side(0.8 / 2**k, 32, 32, "l2") for k in range(10)] == [29, 21, 15, 11, 7, 5, 5, 3, 3, 3]
    assert window_side(0.8, 2, 2, "l2") == 2  # capped by the image


def test_linf_windows_follow_autoattack_schedule_over_5000_queries(monkeypatch):
    """AutoAttack runs Square with resc_schedule=False: at 5000 queries on 32×32 the last
    windows are 3×3 (a schedule rescaled to the budget is at 1×1 from iteration 4000 on)."""
    sides: list[int] = []
    original = square_module._window

    def recording(n, h, w, s, device, streams=None):
        sides.append(s)
        return original(n, h, w, s, device, streams)

    monkeypatch.setattr(square_module, "_window", recording)
    x, y = torch.rand(1, 3, 32, 32), torch.zeros(1, dtype=torch.long)
    Square(8 / 255, queries=5000)(NeverFooled(), x, y)
    assert len(sides) == 4999  # one proposal per query after the first
    # Hand-computed from the reference's p_selection and s = round(sqrt(p · 32 · 32)).
    expected = {
        0: 29,
        10: 29,
        11: 20,
        50: 20,
        51: 14,
        200: 14,
        201: 10,
        500: 10,
        501: 7,
        1000: 7,
        1001: 5,
        2000: 5,
        2001: 4,
        4000: 4,
        4001: 3,
        4500: 3,
        4998: 3,
    }
    assert {it: sides[it] for it in expected} == expected


@pytest.mark.parametrize("seed", range(4))
def test_l2_window_mass_is_taken_per_image(seed):
    """On a 3×3 image both windows are the whole image. The reference gives every channel of
    the new window the norm sqrt(spare / C + W²) with W over all channels, so after rescaling
    to ε each channel has norm ε/√C; a per-channel W would leave all the mass in channel 0."""
    torch.manual_seed(seed)
    eps = 0.3
    x = torch.full((2, 3, 3, 3), 0.5)
    delta = torch.zeros_like(x)
    delta[:, 0] = torch.randn(2, 3, 3)
    delta = eps * delta / delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)  # on the sphere, channel 0 only
    x_new = Square(eps, "l2")._propose_l2(x, x + delta, 3)
    channel_norms = (x_new - x).flatten(2).norm(dim=2)
    assert torch.allclose(channel_norms, torch.full_like(channel_norms, eps / math.sqrt(3)), atol=1e-5)


@pytest.mark.parametrize("s", [1, 2, 3, 4, 5, 8, 11])
def test_l2_pattern_matches_reference(s):
    """Our closed-form ring pattern against the reference's loop, in either orientation."""
    pytest.importorskip("pyautoattack")
    from pyautoattack.square import SquareAttack

    reference = SquareAttack(lambda t: t, norm="L2", eps=1.0, device="cpu").eta(s)
    ours = square_module._pattern(s)
    assert torch.allclose(ours, reference, atol=1e-6) or torch.allclose(ours, reference.t(), atol=1e-6)


def test_model_mode_restored_and_registry(model, test_data):
    x, y = test_data
    model.train()
    attack = build_attack("square", eps=0.05, queries=5, p_init=0.5, rescale_schedule=True)
    assert isinstance(attack, Square) and attack.queries == 5 and attack.p_init == 0.5 and attack.rescale_schedule
    assert not Square(0.05).rescale_schedule  # AutoAttack's setting is the default
    attack(model, x, y)
    assert model.training
