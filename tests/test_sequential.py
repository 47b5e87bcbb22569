"""Anytime-valid confidence sequences for sequential gates: coverage, exactness at n = N, the fixed-n gate's cut.

Monte-Carlo checks allow a rate of at most alpha plus slack derived from the binomial law: with M independent orders
and a true rate <= alpha, P(count > binom.ppf(1 − 1e-4, M, alpha)) <= 1e-4, so a count above that bound says the
rate exceeds alpha (and the seeded run is deterministic anyway).
"""

from __future__ import annotations

import itertools
import math
import subprocess
import sys

import numpy as np
import pytest
from scipy.stats import betabinom, binom, hypergeom

from hardenctl.gates import apply_gates, drop_gates
from hardenctl.report import Report
from hardenctl.sequential import (
    DROP_TOLERANCE,
    BinaryWoRCS,
    BoundedWoRCS,
    beta_binomial_count_bounds,
    betting_log_capital,
    count_cut,
    decide,
    mean_cut,
    plug_in_bets,
    round_record,
    split_alpha,
)
from hardenctl.stats import wilson_interval

ALPHA = 0.05
ORDERS = 2000


def allowed(count: int = ORDERS, alpha: float = ALPHA) -> int:
    """Most misses consistent with a rate <= alpha (false alarm <= 1e-4)."""
    return int(binom.ppf(1 - 1e-4, count, alpha))


def ends_for(population: int, size: int) -> np.ndarray:
    ends = np.arange(size, population + 1, size)
    return ends if ends[-1] == population else np.append(ends, population)


def orders_of(rng: np.random.Generator, values: np.ndarray, count: int = ORDERS) -> np.ndarray:
    """``count`` uniformly random orders of ``values`` (one per row)."""
    return values[np.argsort(rng.random((count, values.size)), axis=1)]


def binary_population(population: int, total: int) -> np.ndarray:
    values = np.zeros(population)
    values[:total] = 1.0
    return values


def cs_table(population: int, ends: np.ndarray, alpha: float) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    return {int(t): beta_binomial_count_bounds(population, int(t), np.arange(t + 1), alpha) for t in ends}


def binary_cs_rounds(orders: np.ndarray, ends: np.ndarray, alpha: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """(lowest, highest total) per round for every order, from the module's CS."""
    table, seen = cs_table(orders.shape[1], ends, alpha), np.cumsum(orders, axis=1).astype(int)
    return [(table[int(t)][0][seen[:, t - 1]], table[int(t)][1][seen[:, t - 1]]) for t in ends]


def naive_wilson_rounds(orders: np.ndarray, ends: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """The naive rule's intervals, as totals: the fixed-n Wilson interval at each n, scaled to N (n = N: exact)."""
    population, seen = orders.shape[1], np.cumsum(orders, axis=1).astype(int)
    rounds = []
    for t in ends:
        table = np.array([wilson_interval(k / t, int(t)) for k in range(t + 1)]) * population
        rows = table[seen[:, t - 1]] if t < population else np.stack([seen[:, -1]] * 2, axis=1)
        rounds.append((rows[:, 0], rows[:, 1]))
    return rounds


def wrong_early_verdicts(rounds, cut: float, full_passes: bool) -> int:
    """Orders whose first decided round's verdict differs from the full run's."""
    decided = np.zeros(rounds[0][0].shape, dtype=bool)
    wrong = np.zeros_like(decided)
    for low, high in rounds:
        verdict = np.array([decide(lo, hi, cut) for lo, hi in zip(low, high)], dtype=object)
        new = ~decided & (verdict != None)  # noqa: E711  (element-wise)
        wrong |= new & (verdict == ("fail" if full_passes else "pass"))
        decided |= new
    return int(wrong.sum())


def ever_missed(rounds, truth: float) -> np.ndarray:
    missed = np.zeros(rounds[0][0].shape, dtype=bool)
    for low, high in rounds:
        missed |= (truth < low) | (truth > high)
    return missed


# -- (a) coverage and early-verdict errors ----------------------------------------------------------------------------


@pytest.mark.parametrize("accuracy", [0.0, 0.1, 0.45, 0.7, 1.0])
def test_binary_cs_ever_misses_the_full_population_total_at_most_alpha(accuracy):
    rng, population = np.random.default_rng(11), 200
    total = int(round(accuracy * population))
    rounds = binary_cs_rounds(orders_of(rng, binary_population(population, total)), ends_for(population, 10), ALPHA)
    assert ever_missed(rounds, total).sum() <= allowed()


@pytest.mark.parametrize("basis", ["point", "lower"])
@pytest.mark.parametrize("offset", [-1, 0])  # the full-run total one below the cut (fails) and exactly at it (passes)
def test_early_verdicts_at_the_threshold_differ_from_the_full_run_at_most_alpha(basis, offset):
    rng, population = np.random.default_rng(12), 200
    cut = count_cut(0.45, basis, population)
    orders = orders_of(rng, binary_population(population, cut + offset))
    rounds = binary_cs_rounds(orders, ends_for(population, 2), ALPHA)
    assert wrong_early_verdicts(rounds, cut, full_passes=offset == 0) <= allowed()


@pytest.mark.parametrize("offset", [-1, 0])
def test_the_naive_wilson_peeking_rule_fails_the_same_check(offset):
    """The check above has power: peeking at a fixed-n Wilson interval after each of 100 rounds errs > alpha, and
    that interval ever misses the full run's accuracy far more often than alpha."""
    rng, population = np.random.default_rng(12), 200
    cut = count_cut(0.45, "point", population)
    orders = orders_of(rng, binary_population(population, cut + offset))
    rounds = naive_wilson_rounds(orders, ends_for(population, 2))
    assert wrong_early_verdicts(rounds, cut, full_passes=offset == 0) > allowed()
    assert ever_missed(rounds, cut + offset).sum() > allowed()


def fractional_population(rng: np.random.Generator, population: int) -> np.ndarray:
    """A randomised model's clean values: the fraction of 8 EOT draws correct, per-sample rates spread out."""
    return rng.binomial(8, rng.beta(2, 1, population)) / 8


@pytest.mark.parametrize("low,high", [(0.0, 1.0), (-1.0, 1.0)])
def test_betting_cs_ever_misses_the_population_mean_at_most_alpha(low, high):
    rng, population = np.random.default_rng(13), 200
    values = fractional_population(rng, population) if low == 0 else rng.choice([-1.0, 0.0, 0.0, 0.0, 1.0], population)
    z = (orders_of(rng, values) - low) / (high - low)
    truth = float(z.mean(axis=1)[0])
    log_up, log_down = betting_log_capital(z, plug_in_bets(z, ALPHA), truth, population)
    ends = ends_for(population, 10) - 1
    missed = np.any(np.maximum(log_up[:, ends], log_down[:, ends]) >= math.log(2 / ALPHA), axis=1)
    assert missed.sum() <= allowed()


def test_bounded_cs_bounds_and_decisions_agree_with_its_capital():
    """bounds() contains m exactly when neither capital at m reaches 2/alpha; decide() reads the same capital."""
    rng, population = np.random.default_rng(14), 150
    values = fractional_population(rng, population)
    for order in orders_of(rng, values, 5):
        sequence = BoundedWoRCS(population, ALPHA)
        sequence.update(order[:60])
        low, high = sequence.bounds()
        z = order[:60]
        for m in np.linspace(0.01, 0.99, 99):
            up, down = betting_log_capital(z, plug_in_bets(z, ALPHA), m, population)
            inside = up[-1] < math.log(2 / ALPHA) and down[-1] < math.log(2 / ALPHA)
            if abs(m - low) > 1e-6 and abs(m - high) > 1e-6:
                assert inside == (low <= m <= high), (m, low, high)
            if m < low - 1e-6:
                assert sequence.decide(m) == "pass" and sequence.decide(m, at_least=False) == "fail"
            elif m > high + 1e-6:
                assert sequence.decide(m) == "fail" and sequence.decide(m, at_least=False) == "pass"
            elif low + 1e-6 < m < high - 1e-6:
                assert sequence.decide(m) is None and sequence.decide(m, at_least=False) is None


def test_splitting_alpha_over_five_gates_keeps_any_miss_at_most_alpha():
    """Five gated quantities, each CS at alpha/5: P(any CS ever misses) <= alpha. At alpha each, it exceeds alpha."""
    rng, population = np.random.default_rng(15), 200
    ends = ends_for(population, 5)
    per_gate = split_alpha(ALPHA, 5)
    any_missed = np.zeros(ORDERS, dtype=bool)
    for accuracy in (0.2, 0.35, 0.45, 0.6, 0.8):
        total = int(accuracy * population)
        orders = orders_of(rng, binary_population(population, total))
        any_missed |= ever_missed(binary_cs_rounds(orders, ends, per_gate), total)
    assert any_missed.sum() <= allowed()


# -- the martingales themselves, exactly ----------------------------------------------------------------------------


def test_betting_capital_is_a_mean_one_martingale_over_all_orders():
    """Over all 720 orders of 6 values, E[K±_t(true mean)] = 1 at every t: WoR means and predictable bets."""
    values = np.array([0.0, 0.25, 1.0, 1.0, 0.5, 0.0])
    orders = np.array(list(itertools.permutations(values)))
    log_up, log_down = betting_log_capital(orders, plug_in_bets(orders, ALPHA), values.mean(), values.size)
    assert np.exp(log_up).mean(axis=0) == pytest.approx(np.ones(6), abs=1e-12)
    assert np.exp(log_down).mean(axis=0) == pytest.approx(np.ones(6), abs=1e-12)
    assert np.exp(log_up).max() > 1.5  # the bets are not trivially zero


def test_binary_cs_matches_a_brute_force_bayes_computation():
    """The closed form equals {s : posterior(s) > alpha·prior(s)}, the posterior from the hypergeometric likelihood."""
    population, alpha = 30, 0.1
    prior = betabinom.pmf(np.arange(population + 1), population, 1, 1)
    for n in (0, 1, 7, 15, 29, 30):
        for successes in range(n + 1):
            likelihood = hypergeom.pmf(successes, population, np.arange(population + 1), n)
            posterior = prior * likelihood / np.sum(prior * likelihood)
            inside = np.nonzero(posterior > alpha * prior)[0]
            low, high = beta_binomial_count_bounds(population, n, successes, alpha)
            assert (int(low[0]), int(high[0])) == (inside.min(), inside.max()), (n, successes)
            assert np.array_equal(inside, np.arange(inside.min(), inside.max() + 1))  # an interval


# -- (c) exact at n = N; the cut is the fixed-n gate's --------------------------------------------------------------


@pytest.mark.parametrize("population", [1, 2, 37, 200])
def test_binary_bounds_collapse_to_the_exact_total_at_n_equals_N(population):
    for total in sorted({0, 1, population // 3, population - 1, population} & set(range(population + 1))):
        sequence = BinaryWoRCS(population, ALPHA)
        sequence.update(total, population)
        assert sequence.count_bounds() == (total, total)
        assert sequence.bounds() == (total / population, total / population)


def test_bounded_bounds_collapse_to_the_exact_mean_at_n_equals_N():
    rng = np.random.default_rng(16)
    values = rng.choice([-1.0, -0.5, 0.0, 0.25, 1.0], 101)
    sequence = BoundedWoRCS(101, ALPHA, -1.0, 1.0)
    for start in range(0, 101, 30):
        sequence.update(values[start : start + 30])
    low, high = sequence.bounds()
    assert low == pytest.approx(values.mean(), abs=1e-15) and high == pytest.approx(values.mean(), abs=1e-15)


def fixed_gate_passes(total: int, population: int, threshold: float, basis: str) -> bool:
    """hardenctl's own fixed-n --min-robust-acc gate on a run with ``total`` robust of ``population``."""
    report = Report(
        schema_version="1.0",
        clean_accuracy=1.0,
        robust_accuracy=total / population,
        attacks={},
        per_class={},
        n=population,
        eps=0.0,
        norm="linf",
        suite="quick",
        seed=0,
        model_sha256=None,
        data_sha256="d",
        versions={},
        normalization={},
        seconds=0.0,
    )
    gates = apply_gates(report, min_robust_acc=threshold, gate_on=basis)
    return next(g for g in gates if g.name == "min_robust_acc").passed


@pytest.mark.parametrize(
    "population,threshold",
    [(1, 0.5), (10, 0.45), (200, 0.45), (1000, 0.45), (1000, 0.9), (997, 0.333), (50, 0.0), (50, 1.0), (50, 0.99)],
)
@pytest.mark.parametrize("basis", ["point", "lower"])
def test_count_cut_agrees_with_the_fixed_n_gate_for_every_total(population, threshold, basis):
    cut = count_cut(threshold, basis, population)
    for total in range(population + 1):
        assert (total >= cut) == fixed_gate_passes(total, population, threshold, basis), (total, cut)
        sequence = BinaryWoRCS(population, ALPHA)
        sequence.update(total, population)
        if total in (cut - 1, cut):
            assert sequence.decide(cut) == ("pass" if total >= cut else "fail")


@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.45, 0.8, 0.999, 1.0])
def test_mean_cut_is_the_float_boundary_of_the_fixed_n_rule(threshold):
    for population in (1, 20, 1000):
        cut = mean_cut(threshold, "lower", population)
        if math.isinf(cut):
            assert wilson_interval(1.0, population)[0] < threshold
            continue
        assert wilson_interval(cut, population)[0] >= threshold
        if cut > 0:
            assert wilson_interval(float(np.nextafter(cut, 0.0)), population)[0] < threshold
    assert mean_cut(threshold, "point", 10) == threshold


@pytest.mark.parametrize("regressed,improved", [(10, 0), (11, 0), (20, 10), (21, 10), (0, 5), (0, 0)])
def test_paired_drop_decision_at_n_equals_N_is_the_fixed_gates(regressed, improved):
    population, max_drop = 1000, 0.01
    d = np.zeros(population)
    d[:regressed], d[regressed : regressed + improved] = 1.0, -1.0
    fall = (regressed - improved) / population
    paired = {"robust": {"difference": fall}, "clean": {"difference": 0.0}}
    report_now = Report(
        schema_version="1.0",
        clean_accuracy=1.0,
        robust_accuracy=0.5,
        attacks={},
        per_class={},
        n=population,
        eps=0.0,
        norm="linf",
        suite="quick",
        seed=0,
        model_sha256=None,
        data_sha256="d",
        versions={},
        normalization={},
        seconds=0.0,
    )
    gates = drop_gates(report_now, report_now, max_drop, paired)
    fixed = next(g for g in gates if g.name == "max_drop_robust_accuracy")
    sequence = BoundedWoRCS(population, ALPHA, -1.0, 1.0)
    sequence.update(np.random.default_rng(17).permutation(d))
    assert sequence.decide(max_drop + DROP_TOLERANCE, at_least=False) == ("pass" if fixed.passed else "fail")


# -- (d) determinism and resume ----------------------------------------------------------------------------------


def test_state_is_a_function_of_the_values_in_order_not_of_the_rounds():
    """Resume: feeding the per-sample results so far in order, in any grouping, re-creates the same sequence."""
    values = fractional_population(np.random.default_rng(18), 300)
    by_round, at_once = BoundedWoRCS(300, ALPHA), BoundedWoRCS(300, ALPHA)
    start = 0
    for size in (50, 7, 33, 30):
        by_round.update(values[start : start + size])
        start += size
    at_once.update(values[:120])
    assert by_round.bounds() == at_once.bounds() and by_round.n == at_once.n == 120
    assert BoundedWoRCS(300, ALPHA).bounds() == (0.0, 1.0)
    again = BoundedWoRCS(300, ALPHA)
    again.update(values[:120])
    assert again.bounds() == at_once.bounds()  # deterministic
    binary = [BinaryWoRCS(300, ALPHA) for _ in range(2)]
    for successes, count in ((20, 50), (3, 7), (40, 63)):
        binary[0].update(successes, count)
    binary[1].update(63, 120)  # counts summed over rounds (and over ranks) give the same state
    assert binary[0].count_bounds() == binary[1].count_bounds()


def test_round_record_is_the_report_entry():
    robust, clean = BinaryWoRCS(100, 0.025), BoundedWoRCS(100, 0.025)
    robust.update(30, 50)
    clean.update(np.linspace(0.5, 1.0, 50))
    record = round_record(50, {"robust_accuracy": robust, "clean_accuracy": clean})
    assert record["n"] == 50 and list(record) == ["n", "robust_accuracy", "clean_accuracy"]
    assert record["robust_accuracy"] == list(robust.bounds())
    assert all(isinstance(v, float) for v in record["clean_accuracy"])


# -- (e) edge cases --------------------------------------------------------------------------------------------------


def test_all_zeros_and_all_ones_decide_early_and_correctly():
    for value, expected in ((0, "fail"), (1, "pass")):
        binary, bounded = BinaryWoRCS(1000, ALPHA), BoundedWoRCS(1000, ALPHA)
        for _ in range(4):
            binary.update(50 * value, 50)
            bounded.update(np.full(50, float(value)))
        assert binary.decide(count_cut(0.45, "point", 1000)) == expected
        assert bounded.decide(0.45) == expected
        low, high = bounded.bounds()
        assert low <= value <= high


def test_a_population_of_one():
    binary, bounded = BinaryWoRCS(1, ALPHA), BoundedWoRCS(1, ALPHA)
    assert binary.count_bounds() == (0, 1) and bounded.bounds() == (0.0, 1.0)
    assert binary.decide(1) is None and bounded.decide(0.5) is None
    binary.update(1, 1)
    bounded.update([0.25])
    assert binary.count_bounds() == (1, 1) and bounded.bounds() == (0.25, 0.25)
    assert binary.decide(1) == "pass" and bounded.decide(0.5) == "fail"


def test_uneven_rounds_and_empty_rounds_are_fine():
    binary, bounded = BinaryWoRCS(97, ALPHA), BoundedWoRCS(97, ALPHA)
    for size in (1, 0, 13, 40, 0, 43):
        binary.update(size // 2, size)
        bounded.update(np.full(size, 0.5))
    assert binary.n == bounded.n == 97
    assert binary.count_bounds() == (47, 47) and bounded.bounds() == pytest.approx((0.5, 0.5))  # 0+0+6+20+0+21 ones


def test_certain_verdicts_are_decided_before_any_image():
    assert count_cut(0.0, "point", 100) == 0 and count_cut(1.01, "point", 100) == 101
    assert count_cut(0.99, "lower", 100) == 101  # even 100/100 has a Wilson lower bound below 0.99
    fresh = BinaryWoRCS(100, ALPHA)
    assert fresh.decide(0) == "pass" and fresh.decide(101) == "fail" and fresh.decide(50) is None
    assert BoundedWoRCS(100, ALPHA).decide(mean_cut(1.0, "lower", 100)) == "fail"


def test_bad_input_is_refused():
    binary, bounded = BinaryWoRCS(10, ALPHA), BoundedWoRCS(10, ALPHA)
    for args in ((3, 2), (-1, 2), (5, 11)):
        with pytest.raises(ValueError):
            binary.update(*args)
    for values in ([1.5], [-0.1], [float("nan")], [0.5] * 11):
        with pytest.raises(ValueError):
            bounded.update(values)
    with pytest.raises(ValueError):
        bounded.update([0.5, 0.5], count=3)
    for make in (
        lambda: BinaryWoRCS(0, ALPHA),
        lambda: BinaryWoRCS(10, 1.0),
        lambda: BoundedWoRCS(10, ALPHA, 1.0, 1.0),
        lambda: split_alpha(0.05, 0),
        lambda: count_cut(0.5, "upper", 10),
    ):
        with pytest.raises(ValueError):
            make()
    assert split_alpha(0.05, 4) == pytest.approx(0.0125)


def test_the_module_needs_no_torch():
    """A CI gate's statistics load without torch (numpy and scipy only)."""
    code = "import sys, hardenctl.sequential; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
