"""The paired comparison of two evaluations of the same images, sample by sample (``extra.paired``): which samples
regressed or improved, and whether the change is more than noise (exact McNemar).

``eval --baseline`` gates on it, ``compare`` shows it, and a sequential run pairs the images it evaluated; it sits
below all three so none imports another for it.
"""

from __future__ import annotations

from typing import Any

from .errors import UserError
from .report import REGRESSED_SHOWN, Report, SampleResults
from .report.common import clean_text

__all__ = ["paired_comparison", "paired_on_evaluated", "samples_at"]


def paired_comparison(
    report: Report,
    baseline_samples: SampleResults,
    baseline_name: str = "the baseline",
    baseline_samples_name: str | None = None,
    current_name: str = "this evaluation",
) -> dict[str, Any]:
    """Compare this evaluation (``current_name``: what the errors call it) with the baseline's per-sample results,
    sample by sample (``extra.paired``).

    robust: ``regressed`` = robust in the baseline, not now; ``improved`` = the reverse; ``difference`` =
    (regressed − improved) / n, the drop ``--max-drop`` gates on; ``mcnemar_p`` the exact two-sided McNemar
    p-value on those two counts. clean: the same per sample on ``clean_correct`` (fractions of draws for a
    randomised model, where McNemar does not apply and ``mcnemar_p`` is None).

    On the same samples the paired difference equals the difference of the two rates; what pairing adds is
    *which* samples changed and whether the change is more than noise (McNemar).
    """
    from .stats import mcnemar_exact

    now = report.samples
    baseline_text, current_text = clean_text(baseline_name), clean_text(current_name)
    if now is None:
        raise UserError(
            f"{current_text} has no per-sample results to pair with {baseline_text}'s",
            "evaluate with hardenctl.evaluate (or `hardenctl eval`), which records them",
        )
    n = len(now)
    if len(baseline_samples) != n:
        raise UserError(
            f"{baseline_text}'s per-sample results have {len(baseline_samples)} samples but {current_text} has {n}",
            "compare evaluations of the same --n and data",
        )
    if list(baseline_samples.label) != list(now.label):
        first = next(i for i, (a, b) in enumerate(zip(baseline_samples.label, now.label)) if a != b)
        raise UserError(
            f"{baseline_text}'s per-sample results have label {baseline_samples.label[first]} at sample "
            f"{first} but {current_text} has {now.label[first]}",
            "compare evaluations of the same data",
        )
    pairs = list(zip(baseline_samples.robust, now.robust))
    regressed = [i for i, (then, current) in enumerate(pairs) if then and not current]
    improved = sum(1 for then, current in pairs if current and not then)
    rows = now.rows()
    clean_change = [then - current for then, current in zip(baseline_samples.clean_correct, now.clean_correct)]
    clean_binary = all(v in (0, 1) for v in (*baseline_samples.clean_correct, *now.clean_correct))
    clean_regressed, clean_improved = sum(1 for d in clean_change if d > 0), sum(1 for d in clean_change if d < 0)
    return {
        "baseline": baseline_name,
        "baseline_samples": baseline_samples_name,
        "n": n,
        "max_drop_basis": "paired",
        "robust": {
            "regressed": len(regressed),
            "improved": improved,
            "unchanged": n - len(regressed) - improved,
            "difference": (len(regressed) - improved) / n if n else 0.0,
            "mcnemar_p": mcnemar_exact(len(regressed), improved),
        },
        "clean": {
            "regressed": clean_regressed,
            "improved": clean_improved,
            "difference": sum(clean_change) / n if n else 0.0,
            "mcnemar_p": mcnemar_exact(clean_regressed, clean_improved) if clean_binary else None,
        },
        "regressed_samples": [
            {key: rows[i][key] for key in ("index", "source_id", "label", "adversarial_prediction", "broken_by")}
            for i in regressed[:REGRESSED_SHOWN]
        ],
    }


def samples_at(results: SampleResults, indices: list[int]) -> SampleResults:
    """The rows of ``results`` (a full run's, index i on row i) at ``indices``: a baseline's images a sequential run
    evaluated, for the paired comparison of those images."""
    fields = (
        "index",
        "source_id",
        "label",
        "clean_prediction",
        "clean_correct",
        "robust",
        "broken_by",
        "adversarial_prediction",
    )
    return SampleResults(**{name: [getattr(results, name)[i] for i in indices] for name in fields})


def paired_on_evaluated(report: Report, baseline_samples: SampleResults) -> dict[str, Any] | None:
    """The paired comparison over the images a sequential run evaluated (None when it has no per-sample results)."""
    if report.samples is None:
        return None
    return paired_comparison(report, samples_at(baseline_samples, list(report.samples.index)))
