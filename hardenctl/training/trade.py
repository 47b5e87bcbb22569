"""What a harden run bought and what it cost: the first lines of its report (issue 21).

Why a section of its own: hardening always trades clean accuracy for robust accuracy, and a user deciding whether to
ship needs that trade in one place, with the noise of a finite test set beside it (95% Wilson intervals), the robust
points gained per clean point paid, and a warning when the run stopped while robustness was still climbing (then
more epochs are the cheapest improvement). Pure functions of the two evaluations and the epoch records.
"""

from __future__ import annotations

import math
from typing import Any, Sequence


def rising_at_the_end(history: Sequence[dict[str, Any]], scored_n: int) -> tuple[bool, str]:
    """Whether held-out robust accuracy was still rising at the last epoch, and the evidence in words.

    Rising: the last epoch is the best so far and beats the one before by more than one binomial standard error of
    the monitor (``scored_n`` held-out images), so a flat curve's noise does not count as progress.

    Args:
        history: the epoch records.
        scored_n: the held-out images the monitor scored.
    """
    robust = [h.get("holdout_robust_accuracy") for h in history]
    if len(robust) < 2 or any(r is None for r in robust[-2:]):
        return (
            False,
            "fewer than two epochs with held-out scores: whether more epochs help cannot be read from the curve",
        )
    last, before = float(robust[-1]), float(robust[-2])
    held_out = max(1, int(scored_n))
    noise = math.sqrt(max(last * (1 - last), 1 / held_out) / held_out)
    evidence = (
        f"held-out robust accuracy {before:.1%} → {last:.1%} over the last two epochs "
        f"(one standard error at n = {held_out}: {noise:.1%})"
    )
    rising = last >= max(float(r) for r in robust if r is not None) and last - before > noise
    return rising, evidence


def trade(
    input_report: Any, hardened_report: Any, history: Sequence[dict[str, Any]], scored_n: int, epochs: int
) -> dict[str, Any]:
    """The trade as numbers (``report.json``'s ``trade``): accuracies before/after with intervals, points gained and
    paid, robust points per clean point, and the under-training verdict with its evidence.

    Args:
        input_report: the input model's evaluation.
        hardened_report: the saved model's evaluation.
        history: the epoch records.
        scored_n: the held-out images the monitor scored.
        epochs: the planned epochs (the suggestion doubles them).
    """
    clean_change = 100 * (hardened_report.clean_accuracy - input_report.clean_accuracy)
    robust_change = 100 * (hardened_report.robust_accuracy - input_report.robust_accuracy)
    per_point = robust_change / -clean_change if clean_change < 0 else None
    rising, evidence = rising_at_the_end(history, scored_n)
    return {
        "clean": _change(input_report, hardened_report, "clean_accuracy", clean_change),
        "robust": _change(input_report, hardened_report, "robust_accuracy", robust_change),
        "robust_points_per_clean_point": per_point,
        "n": hardened_report.n,
        "under_trained": rising,
        "evidence": evidence,
        "suggestion": f"robust accuracy was still rising: more epochs should raise it (e.g. --epochs {2 * epochs})"
        if rising
        else None,
    }


def _span(interval: Sequence[float]) -> str:
    return f"[{interval[0]:.1%}, {interval[1]:.1%}]"


def trade_lines(numbers: dict[str, Any]) -> list[str]:
    """The trade in words, one statement per line (Markdown-safe: numbers and fixed words only).

    Args:
        numbers: what :func:`trade` returned.
    """
    clean, robust = numbers["clean"], numbers["robust"]
    lines = [
        f"Robust accuracy {robust['before']:.1%} {_span(robust['before_interval'])} → {robust['after']:.1%} "
        f"{_span(robust['after_interval'])} ({robust['change_points']:+.1f} points); clean accuracy "
        f"{clean['before']:.1%} {_span(clean['before_interval'])} → {clean['after']:.1%} "
        f"{_span(clean['after_interval'])} ({clean['change_points']:+.1f} points), on the same n = {numbers['n']} "
        "samples (95% intervals)."
    ]
    per_point = numbers["robust_points_per_clean_point"]
    if per_point is not None:
        lines.append(f"Trade: {per_point:.2f} robust points gained per clean point paid.")
    elif robust["change_points"] > 0:
        lines.append("Trade: robust accuracy rose at no cost in clean accuracy.")
    else:
        lines.append("Trade: no robust accuracy was gained.")
    if numbers["under_trained"]:
        lines.append(f"Looks under-trained: {numbers['evidence']}; {numbers['suggestion']}.")
    else:
        lines.append(f"Training curve: {numbers['evidence']}.")
    return lines


def _change(before: Any, after: Any, metric: str, points: float) -> dict[str, Any]:
    """One accuracy before and after, with both intervals and the change in points."""
    return {
        "before": getattr(before, metric),
        "after": getattr(after, metric),
        "before_interval": list(before.interval(metric)),
        "after_interval": list(after.interval(metric)),
        "change_points": points,
    }
