"""Statistics for honest gates: 95% intervals for accuracies and the exact McNemar test for paired comparisons.

The Wilson interval is a closed form in plain Python; the exact McNemar test is scipy's exact binomial test.

**Intervals: Wilson score**, not Clopper–Pearson. Clopper–Pearson ("exact") guarantees at least 95% coverage
for every true accuracy, which makes it conservative: its intervals are wider than needed, its real coverage is
often 97–99%, so a ``--gate-on lower`` gate would fail good models more often than it claims. It also needs beta
quantiles (scipy, or a hand-rolled incomplete-beta inversion) and integer counts. Wilson's interval has coverage
close to 95% on average across accuracies and sample sizes, a closed form, stays inside [0, 1], is well behaved at
0/n and n/n (unlike the Wald interval p ± z·sqrt(p(1−p)/n), which collapses to a point there), and takes the
observed proportion directly, so it also applies to a mean of fractions (below).

**Randomised models**: clean accuracy is the mean over samples of the fraction of EOT draws classified correctly.
We use the Wilson interval with that mean as p̂ and the number of samples as n. A value in [0, 1] with mean p has
variance at most p(1 − p) (the Bhatia–Davis bound, reached by 0/1 outcomes), so treating each sample's fraction as
one 0/1 outcome can only widen the interval: it errs on the cautious side, never the flattering one.

**Paired comparison: exact McNemar.** Two evaluations on the same samples disagree on ``b`` samples one way
(robust before, not now: regressed) and ``c`` the other (improved). Under "no change" each discordant sample is
a fair coin, so the two-sided exact p-value is ``min(1, 2·P(X ≤ min(b, c)))`` with X ~ Binomial(b + c, 1/2), and
1 when there is no discordant sample. Concordant samples carry no information about the change and are ignored.
"""

from __future__ import annotations

import math
from statistics import NormalDist

CONFIDENCE = 0.95
Z95 = NormalDist().inv_cdf(0.5 + CONFIDENCE / 2)  # 1.959963984540054
INTERVAL_METHOD = "wilson"


def wilson_interval(proportion: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval (default 95%) for an observed ``proportion`` (successes / n, or a mean of fractions)
    over ``n``.

    n = 0 gives (0, 1): nothing was measured, so nothing is known.
    """
    if n < 0 or not 0.0 <= proportion <= 1.0 or proportion != proportion:
        raise ValueError(f"a proportion in [0, 1] over n >= 0 samples, got {proportion!r} over {n!r}")
    if n == 0:
        return 0.0, 1.0
    z2 = z * z
    denominator = 1.0 + z2 / n
    centre = (proportion + z2 / (2 * n)) / denominator
    half = z / denominator * math.sqrt(proportion * (1.0 - proportion) / n + z2 / (4 * n * n))
    low = 0.0 if proportion == 0.0 else max(0.0, centre - half)  # exact at the edges, not 1e-17 off
    high = 1.0 if proportion == 1.0 else min(1.0, centre + half)
    return low, high


def mcnemar_exact(regressed: int, improved: int) -> float:
    """Two-sided exact McNemar p-value for ``regressed`` (b) and ``improved`` (c) discordant pairs: scipy's exact
    binomial test of min(b, c) successes in b + c fair-coin trials (1 without a discordant pair)."""
    if regressed < 0 or improved < 0:
        raise ValueError(f"discordant counts must be >= 0, got {regressed}, {improved}")
    m = regressed + improved
    if m == 0:
        return 1.0
    from scipy.stats import binomtest  # scipy is a dependency (the sequential gates); imported when a pair is tested

    return float(binomtest(min(regressed, improved), m, 0.5).pvalue)


__all__ = ["CONFIDENCE", "INTERVAL_METHOD", "Z95", "mcnemar_exact", "wilson_interval"]
