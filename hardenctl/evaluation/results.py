"""From per-sample results to the report's numbers: count first, divide in Python.

A rate is ``count / n`` with both Python numbers, so 23 of 24 is exactly 23/24 in the JSON report (a float32 mean
gave 0.9583333134651184), and the counts it was divided from go into ``Report.counts`` beside it.
"""

from __future__ import annotations

from typing import Any, Sequence

from torch import Tensor

from ..report import SampleResults
from .suite import SuiteResult


def clean_count(clean_correct: Tensor, draws: int) -> int | float:
    """Samples classified correctly: an int; for a randomised model (``draws`` > 1) the sum of each sample's fraction
    of correct draws, summed as whole draws (hits / draws) so no float32 rounding of a fraction creeps in."""
    hits = sum(round(value * draws) for value in clean_correct.tolist())
    return hits if draws == 1 else hits / draws


def robust_count(robust: Tensor) -> int:
    return int(robust.sum())


def suite_counts(main: SuiteResult, draws: int) -> dict[str, Any]:
    """``Report.counts``: what the clean, robust and per-attack rates are divided from."""
    return {
        "n": int(main.robust.shape[0]),
        "clean_correct": clean_count(main.clean_correct, draws),
        "robust_correct": robust_count(main.robust),
        "attacks": dict(main.after_attack),
    }


def rate(count: int | float, n: int) -> float:
    return count / n if n else 0.0


def per_class(
    main: SuiteResult,
    labels: Tensor,
    class_names: Sequence[str],
    draws: int,
    display_names: Sequence[str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Per class: its name (and the name people know it by, when the data gives one), n, the counts and the rates
    divided from them."""
    classes = {}
    for label, name in enumerate(class_names):
        mask = labels == label
        count = int(mask.sum())
        if count:
            clean, robust = clean_count(main.clean_correct[mask], draws), robust_count(main.robust[mask])
            classes[str(label)] = {
                "name": name,
                "n": count,
                "clean_accuracy": rate(clean, count),
                "robust_accuracy": rate(robust, count),
                "clean_correct": clean,
                "robust_correct": robust,
            }
            if display_names is not None and display_names[label] != name:
                classes[str(label)]["display_name"] = display_names[label]
    return classes


def sample_results(
    main: SuiteResult,
    labels: Tensor,
    ids: Sequence[Any] | None,
    names: Sequence[str],
    index: Sequence[int] | None = None,
) -> SampleResults:
    """The per-sample rows (``--samples``): index, source, label, predictions, correctness, the breaking attack.
    ``index``: each row's index in the data (a sequential run's evaluated images); default 0..n-1."""
    n = len(labels)
    index = list(index) if index is not None else list(range(n))
    return SampleResults(
        index=index,
        source_id=[str(ids[i]) for i in range(n)] if ids is not None else [f"row {i}" for i in index],
        label=labels.tolist(),
        clean_prediction=main.clean_prediction.tolist(),
        clean_correct=main.clean_correct.tolist(),
        robust=main.robust.tolist(),
        broken_by=[names[b] if b >= 0 else None for b in main.broken_by.tolist()],
        adversarial_prediction=main.robust_prediction.tolist(),
    )
