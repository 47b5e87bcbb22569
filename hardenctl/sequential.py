"""Anytime-valid confidence sequences for sequential release gates (``hardenctl eval --sequential``).

**Why.** A sequential run attacks the n images of a fixed-n run in a seeded random order, round by round, and stops
once every gate is decided. After t images the results are a simple random sample *without replacement* (WoR) from
the n-image population, and each gate judges a population quantity: the full run's accuracy (a threshold on its
total) or its mean paired drop. A confidence sequence (CS) covers that quantity at every t at once with probability
>= 1 − α (Ville's inequality for a nonnegative martingale), so a verdict taken when the CS lies wholly on one side of
the gate's cut differs from the full run's only if the CS failed: P(any early verdict differs) <= α, whatever the
model and whenever the run stops. Peeking at a fixed-n Wilson interval after every round has no such guarantee
(its error rate at the threshold exceeds α and grows with the number of looks: benchmarks/bench_sequential.py).
It assumes what the fixed-n run already gives: a sample's result does not depend on the order or on its batch.

**Binary values** (robust flags; a deterministic model's clean flags): the prior–posterior-ratio CS of
Waudby-Smith & Ramdas, "Confidence sequences for sampling without replacement" (NeurIPS 2020). With prior π₀ on the
population total and posterior π_t after t draws, π₀(S*)/π_t(S*) is a mean-one martingale at the true total S*, so
C_t = {s : π_t(s) > α·π₀(s)}. Under a Beta(a, b)-binomial prior (default uniform, a = b = 1; the beta-binomial
mixture of Howard et al. 2021 is its with-replacement cousin) the posterior of the unseen total is
BB(N − t, a + s_t, b + t − s_t): a closed form in log-gammas of the two counts (t, s_t), so counts summed over
torchrun ranks are all it needs. It is exact in integers (the gate's cut is an integer total), never empty (π_t and
π₀ both sum to 1), and at t = N it is the single true total.

**Values in [low, high]** (a randomised model's clean fraction of EOT draws; paired drops d_i ∈ [−1, 1]): the WoR
betting CS of Waudby-Smith & Ramdas, "Estimating means of bounded random variables by betting" (JRSS B, 2024).
Rescaled to z ∈ [0, 1], the mean of the unseen values under a candidate population mean m is
μ_i(m) = (N·m − Σ_{j<i} z_j)/(N − i + 1), and K±_t(m) = Π_{i<=t} (1 ± λ±_i·(z_i − μ_i(m))) is a nonnegative
martingale at the true m for bets λ fixed before z_i is seen. We bet their predictable plug-in
λ_i = sqrt(2·log(2/α) / (σ̂²_{i−1}·i·log(1 + i))) (regularised running variance, independent of m) truncated at
c/μ_i(m) (K⁺) or c/(1 − μ_i(m)) (K⁻), c = 1/2. Then K⁺ falls and K⁻ rises with m, so
C_t = {m : K⁺ < 2/α and K⁻ < 2/α} (α/2 a side) is an interval (its ends found by Brent's method), and a gate is
decided by the two capitals at its cut alone. The bets adapt to the variance, which matters for paired drops:
var(d) = discordant share − drop², small when few pairs are discordant (what McNemar's test exploits). With the
baseline known for all N, the robust drop is also a cut on the new model's total (b − c = B − S_new), but betting on d
decides a 0.05 drop in 250–530 images where the beta-binomial CS on S_new needs ~640 (benchmark (v)). The state is a
function of the values in order, not of how rounds grouped them.

**Several gates.** Each gated quantity gets its own CS at α/k for k quantities (Bonferroni, :func:`split_alpha`),
so P(any early verdict differs) <= α overall. A gate never decided runs to n, where every CS is the exact value.

**Cost.** Width: after n of N images the CS is 1.5–1.9× the fixed-n interval for the same quantity (Wilson with
the finite-population correction; benchmarks/RESULTS.md "Sequential gates"), and its early verdicts err far less
often than α (under 1% at the threshold). A gate 0.15 or more from the truth is decided within 20% of a 1,000-image
run (p90, rounds of 50); one at the threshold runs to the end. Time: under 2 ms a round at N = 10,000.

**Why not a library.** ``confseq`` 0.0.11 (2023) does not install as published (it needs Boost, a newer pybind11
than it pins, and NumPy 1's ``np.float_``). Built by hand, its WoR betting CS has the width of ours (same method) but
recomputes the whole sequence on a 1,000-point grid each call (0.9 s per 1,000 images against our 0.05 s for 20
rounds) and has no count-based WoR CS. ``expectation`` needs Python >= 3.12 (we support 3.10). Both constructions
above are short and cited; the code is ours.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
from scipy.optimize import brentq
from scipy.special import betaln, gammaln

from .stats import wilson_interval

Decision = Literal["pass", "fail"] | None
BINARY_METHOD = "wor-beta-binomial-prior-posterior-ratio (Waudby-Smith & Ramdas 2020)"
BOUNDED_METHOD = "wor-betting (Waudby-Smith & Ramdas 2024)"
DROP_TOLERANCE = 1e-12  # hardenctl.gates.drop_gates passes a fall <= max_drop + 1e-12
_TRUNCATION = 0.5  # c: a bet never risks more than half the capital, so capital stays > 0


def split_alpha(alpha: float, quantities: int) -> float:
    """Each of ``quantities`` confidence sequences gets α/k: the union bound keeps P(any miss) <= α."""
    if not 0.0 < alpha < 1.0 or quantities < 1:
        raise ValueError(f"alpha in (0, 1) and at least one quantity, got {alpha!r}, {quantities!r}")
    return alpha / quantities


def decide(low: float, high: float, cut: float, at_least: bool = True) -> Decision:
    """ "pass"/"fail" once [low, high] lies wholly on one side of ``cut``, else None.

    ``at_least``: the gate passes when the population value >= cut (``--min-*-acc``); otherwise when it is <= cut
    (``--max-drop``, cut = max_drop + DROP_TOLERANCE).
    """
    if at_least:
        return "pass" if low >= cut else "fail" if high < cut else None
    return "pass" if high <= cut else "fail" if low > cut else None


def count_cut(threshold: float, basis: str, population: int) -> int:
    """Smallest total k in 0..N whose full-run verdict passes (N + 1: none does), the fixed-n gate's own rule.

    ``basis`` "point": k/N >= threshold; "lower": the 95% Wilson lower bound of k/N (hardenctl.stats) >= threshold.
    Both are monotone in k, so the verdict is a threshold on the total.
    """
    if population < 1 or basis not in ("point", "lower"):
        raise ValueError(f"a population >= 1 and basis point or lower, got {population!r}, {basis!r}")

    def passes(k: int) -> bool:
        value = k / population
        return (value if basis == "point" else wilson_interval(value, population)[0]) >= threshold

    low, high = 0, population + 1  # passes(high) is taken as True: the answer lies in [low, high]
    while low < high:
        middle = (low + high) // 2
        low, high = (low, middle) if passes(middle) else (middle + 1, high)
    if (low <= population and not passes(low)) or (low > 0 and passes(low - 1)):  # float non-monotone: scan
        low = next((k for k in range(population + 1) if passes(k)), population + 1)
    return low


def mean_cut(threshold: float, basis: str, population: int) -> float:
    """Smallest population mean in [0, 1] whose full-run verdict passes (``inf``: none does): fractional values."""
    if population < 1 or basis not in ("point", "lower"):
        raise ValueError(f"a population >= 1 and basis point or lower, got {population!r}, {basis!r}")
    if basis == "point":
        return max(0.0, float(threshold)) if threshold <= 1.0 else float("inf")
    lower = lambda p: wilson_interval(p, population)[0]  # noqa: E731  (monotone in p)
    if lower(1.0) < threshold:
        return float("inf")
    if lower(0.0) >= threshold:
        return 0.0
    low, high = 0.0, 1.0  # lower(low) < threshold <= lower(high): bisect to adjacent floats
    while np.nextafter(low, 1.0) < high:
        middle = 0.5 * (low + high)
        if middle in (low, high):
            break
        low, high = (low, middle) if lower(middle) >= threshold else (middle, high)
    return high


def beta_binomial_count_bounds(
    population: int, n: int, successes: np.ndarray | int, alpha: float, prior: tuple[float, float] = (1.0, 1.0)
) -> tuple[np.ndarray, np.ndarray]:
    """The prior–posterior-ratio CS for the population total after ``successes`` of ``n`` draws (vectorised).

    Returns integer arrays (lowest, highest) total in {s : π_n(s) > α·π₀(s)}; the set is an interval for a, b >= 1.
    """
    a, b = prior
    ones = np.atleast_1d(np.asarray(successes, dtype=np.int64))[:, None]
    unseen = np.arange(population - n + 1)[None, :]  # ones among the N − n unseen values
    total = ones + unseen
    log_prior = _log_beta_binomial(total, population, a, b)
    log_posterior = _log_beta_binomial(unseen, population - n, a + ones, b + n - ones)
    inside = log_posterior - log_prior > np.log(alpha)
    first = np.argmax(inside, axis=1)
    last = inside.shape[1] - 1 - np.argmax(inside[:, ::-1], axis=1)
    return ones[:, 0] + first, ones[:, 0] + last


def _log_beta_binomial(k: np.ndarray, n: int, a: np.ndarray | float, b: np.ndarray | float) -> np.ndarray:
    """log P(K = k) for K ~ BetaBinomial(n, a, b)."""
    return (gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1)) + betaln(k + a, n - k + b) - betaln(a, b)


class BinaryWoRCS:
    """CS for the total (and mean) of N binary values sampled without replacement: counts in, integer bounds out."""

    method = BINARY_METHOD

    def __init__(self, population: int, alpha: float, prior: tuple[float, float] = (1.0, 1.0)) -> None:
        if int(population) != population or population < 1 or not 0.0 < alpha < 1.0 or min(prior) < 1.0:
            raise ValueError(
                f"population >= 1, alpha in (0, 1), prior a, b >= 1; got {population!r}, {alpha!r}, {prior!r}"
            )
        self.population, self.alpha, self.prior = int(population), float(alpha), prior
        self.n, self.successes = 0, 0

    def update(self, successes: int, count: int) -> None:
        """Add one round: ``successes`` ones among ``count`` newly seen values (summed over ranks)."""
        if not 0 <= successes <= count or self.n + count > self.population:
            raise ValueError(f"{successes} of {count} more values after {self.n} of {self.population}")
        self.n, self.successes = self.n + int(count), self.successes + int(successes)

    def count_bounds(self) -> tuple[int, int]:
        """Lowest and highest population total in the CS (both the true total at n = N)."""
        low, high = beta_binomial_count_bounds(self.population, self.n, self.successes, self.alpha, self.prior)
        return int(low[0]), int(high[0])

    def bounds(self) -> tuple[float, float]:
        """The CS for the population mean (total / N)."""
        low, high = self.count_bounds()
        return low / self.population, high / self.population

    def decide(self, cut: int, at_least: bool = True) -> Decision:
        """Decision for a gate on the total: ``cut`` from :func:`count_cut` (population total >= cut passes)."""
        return decide(*self.count_bounds(), cut, at_least)


def plug_in_bets(z: np.ndarray, alpha: float) -> np.ndarray:
    """λ̃_i from z_1..z_{i−1} only (predictable), for values ``z`` in [0, 1] along the last axis (vectorised)."""
    steps = np.arange(1, z.shape[-1] + 1)
    running_mean = (0.5 + np.cumsum(z, axis=-1)) / (steps + 1)
    running_var = (0.25 + np.cumsum((z - running_mean) ** 2, axis=-1)) / (steps + 1)
    var_before = np.concatenate([np.full(z.shape[:-1] + (1,), 0.25), running_var[..., :-1]], axis=-1)
    return np.sqrt(2.0 * np.log(2.0 / alpha) / (var_before * steps * np.log1p(steps)))


def betting_log_capital(
    z: np.ndarray, bets: np.ndarray, m: np.ndarray | float, population: int, running: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Running log K⁺ and log K⁻ at candidate population mean(s) ``m`` (broadcast against z's leading axes); only
    the last values (the current capital) when not ``running``.

    A mean the values seen already rule out (some μ_i(m) outside [0, 1]) gets +inf on the side that excludes it.
    """
    steps = np.arange(z.shape[-1])
    seen_before = np.cumsum(z, axis=-1) - z
    m = np.asarray(m, dtype=float)[..., None]
    unseen_mean = (population * m - seen_before) / (population - steps)
    tolerance = 1e-9
    low_out, high_out = unseen_mean < -tolerance, unseen_mean > 1.0 + tolerance
    mu = np.clip(unseen_mean, 0.0, 1.0)
    with np.errstate(divide="ignore"):
        up_bet = np.minimum(bets, _TRUNCATION / mu)
        down_bet = np.minimum(bets, _TRUNCATION / (1.0 - mu))
    up = np.where(low_out, np.inf, np.log1p(up_bet * (z - mu)))
    down = np.where(high_out, np.inf, np.log1p(down_bet * (mu - z)))
    total = np.cumsum if running else np.sum
    return total(up, axis=-1), total(down, axis=-1)


class BoundedWoRCS:
    """CS for the mean of N values in [low, high] sampled without replacement (betting); values in, in order."""

    method = BOUNDED_METHOD

    def __init__(self, population: int, alpha: float, low: float = 0.0, high: float = 1.0) -> None:
        if int(population) != population or population < 1 or not 0.0 < alpha < 1.0 or not low < high:
            raise ValueError(
                f"population >= 1, alpha in (0, 1), low < high; got {population!r}, {alpha!r}, {low!r}, {high!r}"
            )
        self.population, self.alpha, self.low, self.high = int(population), float(alpha), float(low), float(high)
        self._chunks: list[np.ndarray] = []
        self.n, self.total = 0, 0.0  # values seen and their sum (on the values' own scale)

    def update(self, values: Sequence[float] | np.ndarray, count: int | None = None) -> None:
        """Add one round's values, in evaluation order (``count``, if given, must equal their number)."""
        x = np.asarray(values, dtype=float).ravel()
        if count is not None and count != x.size:
            raise ValueError(f"count {count} but {x.size} values")
        if self.n + x.size > self.population or np.any(np.isnan(x)) or np.any((x < self.low) | (x > self.high)):
            raise ValueError(f"{x.size} more values in [{self.low}, {self.high}] after {self.n} of {self.population}")
        self._chunks.append((x - self.low) / (self.high - self.low))
        self.n, self.total = self.n + x.size, self.total + float(x.sum())

    def _history(self) -> tuple[np.ndarray, np.ndarray]:
        z = np.concatenate(self._chunks) if self._chunks else np.zeros(0)
        self._chunks = [z] if z.size else []
        return z, plug_in_bets(z, self.alpha)

    def _logical(self, z: np.ndarray) -> tuple[float, float]:
        """The population means still possible: every unseen value at 0, or every one at 1."""
        seen = float(z.sum())
        return seen / self.population, (seen + self.population - self.n) / self.population

    def bounds(self) -> tuple[float, float]:
        """The CS for the population mean on the values' scale (the exact mean at n = N)."""
        z, bets = self._history()
        lowest, highest = self._logical(z)
        if self.n == self.population:
            return self.total / self.population, self.total / self.population  # as the fixed-n run computes it
        if self.n == 0:
            return self.low, self.high
        threshold = np.log(2.0 / self.alpha)
        low = _crossing(
            lambda m: betting_log_capital(z, bets, m, self.population, False)[0],
            threshold,
            lowest,
            highest,
            rising=False,
        )
        high = _crossing(
            lambda m: betting_log_capital(z, bets, m, self.population, False)[1],
            threshold,
            lowest,
            highest,
            rising=True,
        )
        if low > high:  # the CS is empty (probability <= α): claim nothing beyond the logical range
            low, high = lowest, highest
        return self._scale(low), self._scale(high)

    def decide(self, cut: float, at_least: bool = True) -> Decision:
        """Decision for a gate on the mean (``cut`` on the values' scale), from the capital at the cut alone.

        K⁺(cut) >= 2/α rules out every mean <= cut (K⁺ falls as m rises); K⁻(cut) >= 2/α every mean >= cut.
        """
        z, bets = self._history()
        lowest, highest = self._logical(z)
        if self.n in (0, self.population):  # nothing measured, or the exact mean: the logical range decides
            return decide(*self.bounds(), cut, at_least)
        m = (cut - self.low) / (self.high - self.low)
        log_up, log_down = betting_log_capital(z, bets, m, self.population, running=False)
        up, down = bool(log_up >= np.log(2 / self.alpha)), bool(log_down >= np.log(2 / self.alpha))
        if at_least:
            passed, failed = m <= lowest or up, m > highest or down
        else:
            passed, failed = m >= highest or down, m < lowest or up
        return None if passed == failed else "pass" if passed else "fail"  # both: an empty CS, decide nothing

    def _scale(self, m: float) -> float:
        return self.low + (self.high - self.low) * m


def _crossing(log_capital, threshold: float, lowest: float, highest: float, rising: bool) -> float:
    """Where the monotone ``log_capital(m)`` crosses ``threshold`` on [lowest, highest], rounded outward by 1e-9.

    ``rising=False``: K⁺, excluded below the crossing (a lower bound); ``rising=True``: K⁻, excluded above it.
    """
    excess = lambda m: float(log_capital(m)) - threshold  # noqa: E731
    inner, outer = (highest, lowest) if rising else (lowest, highest)  # inner: the side the search starts from
    if excess(inner) < 0:
        return inner  # nothing ruled out on this side
    if excess(outer) >= 0:
        return outer  # everything ruled out from this side: an empty CS, which the caller reports
    root = brentq(excess, min(inner, outer), max(inner, outer), xtol=1e-12)
    step = 1e-9 * (highest - lowest)
    return min(highest, root + step) if rising else max(lowest, root - step)


def round_record(n: int, sequences: Mapping[str, BinaryWoRCS | BoundedWoRCS]) -> dict:
    """One entry of the report's ``rounds``: ``{"n": n, name: [low, high], ...}`` for each gated quantity."""
    record: dict = {"n": int(n)}
    for name, sequence in sequences.items():
        record[name] = [float(v) for v in sequence.bounds()]
    return record


__all__ = [
    "BINARY_METHOD",
    "BOUNDED_METHOD",
    "DROP_TOLERANCE",
    "BinaryWoRCS",
    "BoundedWoRCS",
    "Decision",
    "beta_binomial_count_bounds",
    "betting_log_capital",
    "count_cut",
    "decide",
    "mean_cut",
    "plug_in_bets",
    "round_record",
    "split_alpha",
]
