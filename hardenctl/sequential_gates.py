"""Release gates of a ``--sequential`` run: what to decide before attacking, and the gates an early stop decided.

The plan is made from the same gate options as a fixed-n run (:class:`~hardenctl.gates.GateOptions`), with the baseline
already loaded: a paired ``--max-drop`` decides on the per-image differences with the baseline's results, a drop
measured between rates becomes a minimum on the new accuracy. When the run stopped early, each gate's verdict is the
one its confidence sequence reached (``basis`` "sequential"); a run that reached ``--n`` is gated as without
``--sequential`` (:func:`hardenctl.gates.apply_gates`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import UserError
from .evaluation.sequential_plan import SequentialPlan, Target
from .report import Gate, Report, SampleResults
from .report.common import sequential_note

if TYPE_CHECKING:
    from .gates import Baseline, GateOptions

DEFAULT_ALPHA = 0.05


def sequential_plan(
    options: GateOptions, baseline: Baseline | None = None, alpha: float = DEFAULT_ALPHA
) -> SequentialPlan:
    """The gates ``options`` set, as targets a sequential run decides (refused when none is set or alpha is wrong)."""
    basis = "lower95" if options.gate_on == "lower" else "point"
    targets = [
        Target(name, float(threshold), basis)
        for name, threshold in (
            ("min_clean_acc", options.min_clean_acc),
            ("min_robust_acc", options.min_robust_acc),
            ("min_protected_robust_acc", options.min_protected_robust_acc),
        )
        if threshold is not None
    ]
    clean = robust = rates = None
    if baseline is not None:
        drop = float(options.max_drop or 0.0)
        paired = baseline.samples is not None
        targets += [
            Target(name, drop, "paired" if paired else "rates")
            for name in ("max_drop_clean_accuracy", "max_drop_robust_accuracy")
        ]
        if paired:
            clean = tuple(float(v) for v in baseline.samples.clean_correct)
            robust = tuple(float(bool(v)) for v in baseline.samples.robust)
        else:
            rates = (float(baseline.report.clean_accuracy), float(baseline.report.robust_accuracy))
    plan = SequentialPlan(tuple(targets), float(alpha), clean, robust, rates)
    from .evaluation.sequential_plan import check_plan

    check_plan(plan)
    return plan


def decided_gates(report: Report, baseline: Report | None) -> list[Gate]:
    """The gates of a run that stopped early, each as its confidence sequence decided it; ``value`` is the bound that
    decided (the lower one for a pass of a minimum, the upper one for its fail; the reverse for a drop)."""
    gates = []
    for name, entry in report.sequential["gates"].items():
        if entry.get("decision") not in ("pass", "fail"):
            raise UserError(
                f"gate {name} of a sequential run that stopped early has no decision",
                "evaluate again (the report is damaged)",
            )
        passed = entry["decision"] == "pass"
        low, high = entry["bounds"]
        value = (low if passed else high) if entry["at_least"] else (high if passed else low)
        threshold = entry["threshold"]
        if name.startswith("max_drop") and entry["at_least"]:  # a drop between rates: decided on the new accuracy
            base = getattr(baseline, name.removeprefix("max_drop_")) if baseline is not None else 0.0
            value, threshold = base - value, base - threshold
        gates.append(Gate(name, threshold, value, passed, "sequential"))
    return gates


def describe_decision(report: Report, gate: Gate) -> str:
    """What a gate of a sequential run rests on (:func:`hardenctl.report.common.sequential_note`)."""
    return sequential_note(report, gate)


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
    from .gates import paired_comparison

    return paired_comparison(report, samples_at(baseline_samples, list(report.samples.index)))
