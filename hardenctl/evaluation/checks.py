"""Sanity checks against false robustness: each compares one measured statistic with a limit.

The limits were set by measuring honest and masked models (``benchmarks/bench_checks.py``, RESULTS.md): a
check fails the release gate by default, so it must fire on masking and never on an honest model.
"""

from __future__ import annotations

import torch
from torch import nn

from ..attacks import PGD, Attack, GradientStats
from ..data import Dataset
from ..report import Check
from .config import EvalConfig, Progress, Transferred
from .suite import BatchRunner, SuiteResult, SuiteRun, run_suite

LARGE_EPS = 0.5
# Check limits, set from the honest and masked models measured in benchmarks/bench_checks.py (RESULTS.md).
ZERO_GRADIENT_LIMIT = 0.5  # fraction of attacked points whose attack-loss gradient is exactly zero
FLAT_GRADIENT_LIMIT = 0.01  # fraction whose logit-margin gradient is zero too (never seen on an honest model)
SQUARE_GAIN_LIMIT = 0.02  # accuracy Square may take off after the white-box attacks
LARGE_EPS_ACCURACY_LIMIT = 0.05  # accuracy PGD-20 may leave at L∞ ε = 0.5


def gradient_check(stats: dict[str, GradientStats]) -> Check:
    """``input_gradients_nonzero``: fails on NaN/inf gradients, on any notable share of points whose output
    does not depend on the input (flat margin), or when an attack saw a zero loss gradient on most of its points.

    A single zero cross-entropy gradient is no evidence: a confident, correct prediction saturates the
    fp32 softmax on an honest model. Most of an attack's points is (logits scaled up to hide gradients);
    it is judged per attack because a scale-invariant later attack (APGD-T's DLR) would dilute the share.
    """
    total = GradientStats()
    worst_name, worst = "", 0.0
    for name, counts in stats.items():
        total.add(counts)
        if counts.points and counts.zero / counts.points > worst:
            worst_name, worst = name, counts.zero / counts.points
    flat = total.flat / max(total.points, 1)
    passed = total.nonfinite == 0 and flat <= FLAT_GRADIENT_LIMIT and worst <= ZERO_GRADIENT_LIMIT
    where = f" (worst: {worst_name}, {worst:.1%} of its points; limit {ZERO_GRADIENT_LIMIT:.0%})" if worst_name else ""
    return Check(
        "input_gradients_nonzero",
        passed,
        f"{total.zero} zero{where}, {total.flat} flat-margin ({flat:.1%}, limit {FLAT_GRADIENT_LIMIT:.0%}) and "
        f"{total.nonfinite} NaN/inf input gradients over {total.points} attacked points",
        value=worst,
        limit=ZERO_GRADIENT_LIMIT,
    )


def suite_checks(
    main: SuiteResult, config: EvalConfig, randomized: bool, draws: int, attack_accuracy: dict[str, float]
) -> list[Check]:
    """The checks the main run's bookkeeping answers: bounds, gradients, EOT, Square vs white-box."""
    checks = [
        Check(
            "perturbations_in_bounds",
            main.bound_violations == 0,
            f"{main.bound_violations} adversarial points outside the {config.norm} ball of {config.eps:.5g} or [0,1] "
            f"(max L∞ {main.max_linf:.5g}, max L2 {main.max_l2:.5g}); all re-scored by a fresh forward pass",
            value=main.bound_violations,
            limit=0,
        ),
        gradient_check(main.gradient_stats),
        Check(
            "eot_used_for_randomized_model",
            not randomized or draws >= 2,
            (
                f"randomised model: gradients and re-scoring averaged over {draws} draws"
                if randomized
                else "deterministic model: repeated forward passes agree, one draw suffices"
            ),
            value=draws if randomized else None,
            limit=2 if randomized else None,
        ),
    ]
    names = list(attack_accuracy)
    if "square" in names and names.index("square") > 0:
        gain = attack_accuracy[names[names.index("square") - 1]] - attack_accuracy["square"]
        checks.append(
            Check(
                "square_not_stronger_than_whitebox",
                gain <= SQUARE_GAIN_LIMIT + 1e-12,
                f"Square lowered accuracy by {gain:.4f} after the white-box attacks (limit {SQUARE_GAIN_LIMIT})",
                value=gain,
                limit=SQUARE_GAIN_LIMIT,
            )
        )
    return checks


def sweep_check(sweep: list[dict], n: int) -> Check:
    """Robust accuracy may not rise with ε by more than one sample (a stronger threat breaks a superset)."""
    rises = [
        (a["eps"], b["eps"])
        for a, b in zip(sweep, sweep[1:])
        if b["robust_accuracy"] > a["robust_accuracy"] + 1.0 / max(n, 1)
    ]
    return Check(
        "robust_accuracy_non_increasing_in_eps",
        not rises,
        "monotone over " + ", ".join(f"{s['eps']:.4g}" for s in sweep)
        if not rises
        else f"accuracy rises from eps {rises[0][0]:.4g} to {rises[0][1]:.4g}",
        value=len(rises),
        limit=0,
    )


def large_eps_check(
    model: nn.Module,
    subset: Dataset,
    config: EvalConfig,
    draws: int,
    device: torch.device,
    progress: Progress | None,
    runner: BatchRunner | None = None,
) -> Check:
    """PGD-20 at L∞ ε = 0.5 (a grey image is within reach of every input) must leave almost nothing."""
    transferred = config.attack_model is not None  # the source model is deterministic: one draw
    big: Attack = PGD(LARGE_EPS, "linf", 1 if transferred else draws, steps=20, alpha=LARGE_EPS / 4)
    if transferred:
        big = Transferred(big, config.attack_model)
    result = run_suite(
        model,
        subset,
        SuiteRun([big], LARGE_EPS, "linf", config.batch_size, config.seed, draws, device),
        progress,
        "eps 0.5 check",
        runner,
    )
    accuracy = int(result.robust.sum()) / len(subset)  # counted, then divided in Python
    return Check(
        "near_zero_accuracy_at_large_eps",
        accuracy <= LARGE_EPS_ACCURACY_LIMIT,
        f"PGD-20 at L∞ eps {LARGE_EPS} leaves {accuracy:.4f} accuracy on {len(subset)} points "
        f"(limit {LARGE_EPS_ACCURACY_LIMIT})",
        value=accuracy,
        limit=LARGE_EPS_ACCURACY_LIMIT,
    )


def buffers_check(changed: list[str], left_training: bool) -> Check:
    """Attacks must leave the model in eval mode with every buffer (BN statistics) as it was; ``changed`` are the
    buffers seen changed over every process (and any killed run a resumed state covers)."""
    return Check(
        "eval_mode_and_buffers_unchanged",
        not left_training and not changed,
        "model in eval mode; all buffers unchanged" if not changed else f"buffers changed: {', '.join(changed[:3])}",
        value=len(changed) + int(left_training),
        limit=0,
    )
