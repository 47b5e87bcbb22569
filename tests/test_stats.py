"""Wilson intervals and the exact McNemar test, checked against independent computations."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest

from hardenctl.stats import Z95, mcnemar_exact, wilson_interval


def wilson_by_quadratic(successes: float, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson bounds as the roots of (p̂ − p)² = z²·p(1 − p)/n, solved independently of the module's formula."""
    p_hat = successes / n
    a, b, c = 1 + z * z / n, -(2 * p_hat + z * z / n), p_hat * p_hat
    root = math.sqrt(b * b - 4 * a * c)
    return (-b - root) / (2 * a), (-b + root) / (2 * a)


def test_z_is_the_two_sided_95_percent_normal_quantile():
    assert Z95 == pytest.approx(1.959963984540054, abs=1e-12)


def test_wilson_matches_hand_computation_for_45_of_100():
    low, high = wilson_interval(0.45, 100)
    assert (low, high) == pytest.approx((0.356145, 0.547554), abs=1e-4)  # by hand (also statsmodels' "wilson")
    assert (low, high) == pytest.approx(wilson_by_quadratic(45, 100), abs=1e-12)


@pytest.mark.parametrize("successes,n", [(1, 7), (13, 20), (500, 1000), (999, 1000), (3, 10000)])
def test_wilson_matches_the_quadratic_roots(successes, n):
    assert wilson_interval(successes / n, n) == pytest.approx(wilson_by_quadratic(successes, n), abs=1e-12)


@pytest.mark.parametrize("n", [1, 2, 6, 9, 10, 100, 1000])  # 2, 6, 9, 10: the plain formula lands 1e-17 outside or off
def test_wilson_edges_are_exact_and_inside_0_1(n):
    z2 = Z95**2
    low, high = wilson_interval(0.0, n)
    assert low == 0.0 and high == pytest.approx(z2 / (n + z2), abs=1e-12)  # 0/n: [0, z²/(n + z²)]
    low, high = wilson_interval(1.0, n)
    assert high == 1.0 and low == pytest.approx(n / (n + z2), abs=1e-12)  # n/n: [n/(n + z²), 1]


def test_wilson_of_nothing_measured_is_everything():
    assert wilson_interval(0.0, 0) == (0.0, 1.0)


def test_wilson_takes_a_mean_of_fractions_and_shrinks_with_n():
    """A randomised model's clean accuracy (a mean of per-sample fractions of draws) over n samples."""
    small, large = wilson_interval(0.8375, 40), wilson_interval(0.8375, 4000)
    assert small[0] < large[0] < 0.8375 < large[1] < small[1]
    assert small == pytest.approx(wilson_by_quadratic(0.8375 * 40, 40), abs=1e-12)


@pytest.mark.parametrize("bad", [(-0.1, 10), (1.1, 10), (float("nan"), 10), (0.5, -1)])
def test_wilson_refuses_impossible_input(bad):
    with pytest.raises(ValueError):
        wilson_interval(*bad)


def exact_mcnemar(b: int, c: int) -> float:
    """Independent: p = min(1, 2·Σ_{k ≤ min(b,c)} C(b+c, k) / 2^(b+c)) with rational arithmetic."""
    m = b + c
    if m == 0:
        return 1.0
    tail = sum(Fraction(math.comb(m, k), 2**m) for k in range(min(b, c) + 1))
    return float(min(Fraction(1), 2 * tail))


def test_mcnemar_8_regressed_2_improved():
    expected = 2 * sum(math.comb(10, k) for k in range(3)) / 2**10
    assert expected == 0.109375
    assert mcnemar_exact(8, 2) == pytest.approx(expected, abs=1e-15)
    assert mcnemar_exact(2, 8) == mcnemar_exact(8, 2)  # two-sided: symmetric


@pytest.mark.parametrize("b,c", [(0, 0), (1, 0), (5, 5), (6, 5), (10, 0), (3, 1), (40, 17), (250, 301)])
def test_mcnemar_matches_rational_arithmetic(b, c):
    assert mcnemar_exact(b, c) == pytest.approx(exact_mcnemar(b, c), rel=1e-12, abs=0)


def test_mcnemar_edges():
    assert mcnemar_exact(0, 0) == 1.0  # no discordant pair: no evidence of change
    assert mcnemar_exact(1, 0) == 1.0  # 2 · 1/2, capped
    assert mcnemar_exact(10, 0) == 2 / 1024
    assert mcnemar_exact(5000, 4000) == pytest.approx(
        exact_mcnemar(5000, 4000), rel=1e-9
    )  # large counts: the tiny tail kept
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 3)
