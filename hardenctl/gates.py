"""Release gates: the thresholds CI fails a build on (exit code 1).

A failed sanity check fails the gate by default: a masked model must not pass ``--min-robust-acc``
with a warning nobody reads in CI. ``--no-strict`` or ``--allow-check NAME`` accept failures
knowingly, and the report records which (``accepted_checks``).

:func:`gate` is what notebooks call (``hardenctl.gate``) and what ``hardenctl eval`` calls: it takes the same options
as the CLI's gate flags (:class:`GateOptions`, checked before anything is evaluated) and a baseline report by path,
with its per-sample results found as ``--baseline`` finds them (:func:`load_baseline`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from .comparable import check_comparable
from .errors import UserError
from .paired import paired_comparison, paired_on_evaluated
from .report import Gate, Report, SampleResults, load_report
from .report.common import clean_text
from .sequential_gates import decided_gates, describe_decision

if TYPE_CHECKING:
    from .evaluation.sequential_plan import SequentialPlan

DEFAULT_ALPHA = 0.05  # the default --alpha of a sequential run

GATE_ON = ("point", "lower")  # --gate-on: compare --min-*-acc with the point estimate or the 95% interval's lower bound

# Every sanity check hardenctl.evaluate can report (each can fail; see README "Sanity checks").
CHECK_NAMES = (
    "perturbations_in_bounds",
    "input_gradients_nonzero",
    "eot_used_for_randomized_model",
    "square_not_stronger_than_whitebox",
    "robust_accuracy_non_increasing_in_eps",
    "near_zero_accuracy_at_large_eps",
    "eval_mode_and_buffers_unchanged",
)


def check_gate(report: Report, strict: bool = True, allowed: Sequence[str] = ()) -> Gate:
    """``sanity_checks``: failed checks not accepted by ``--no-strict`` / ``--allow-check`` fail the gate."""
    accepted = {c.name for c in report.checks} if not strict else set(allowed)
    failing = [c.name for c in report.failed_checks if c.name not in accepted]
    report.accepted_checks = sorted(c.name for c in report.failed_checks if c.name in accepted)
    return Gate("sanity_checks", 0, len(failing), not failing)


def _minimum_gate(report: Report, name: str, threshold: float, metric: str, point: float | None, gate_on: str) -> Gate:
    """``value >= threshold`` on the point estimate, or (``gate_on="lower"``) on the 95% Wilson lower bound."""
    if gate_on == "lower":
        interval = report.interval(metric)
        value = 0.0 if interval is None else interval[0]
        return Gate(name, threshold, value, value >= threshold, "lower95")
    value = 0.0 if point is None else point
    return Gate(name, threshold, value, value >= threshold, "point")


def drop_gates(report: Report, baseline: Report, max_drop: float, paired: dict[str, Any] | None = None) -> list[Gate]:
    """``max_drop_clean_accuracy``/``max_drop_robust_accuracy``: the fall from ``baseline`` may be at most ``max_drop``,
    measured sample by sample when ``paired`` (a :func:`paired_comparison`) is given, else between the two rates."""
    gates = []
    for metric in ("clean_accuracy", "robust_accuracy"):
        if paired is not None:
            fall, basis = paired[metric.split("_")[0]]["difference"], "paired"
        else:
            fall, basis = getattr(baseline, metric) - getattr(report, metric), "rates"
        gates.append(Gate(f"max_drop_{metric}", max_drop, fall, fall <= max_drop + 1e-12, basis))
    return gates


def apply_gates(
    report: Report, options: GateOptions | None = None, baseline: Baseline | Report | None = None, **fields: Any
) -> list[Gate]:
    """Append the requested gates (and the sanity-check gate) to ``report.gates`` and return them.

    Args:
        report: the evaluation's report (its gates are appended).
        options: the thresholds (:class:`GateOptions`); ``gate_on="lower"`` compares the ``min_*`` thresholds with the
            95% Wilson lower bound instead of the point estimate.
        baseline: an earlier report (:class:`Baseline`, or a Report); with its per-sample results the ``max_drop_*``
            gates are paired, sample by sample, and ``extra.paired`` holds the comparison; without, they compare the
            two reports' rates.
        **fields: GateOptions fields, instead of (or on top of) ``options``.
    """
    options = dataclasses.replace(options or GateOptions(), **fields) if fields else options or GateOptions()
    if isinstance(baseline, Report):
        baseline = Baseline(baseline)
    if options.max_drop is not None and baseline is None:
        raise UserError("--max-drop needs --baseline", "pass --baseline old_report.json")
    report.gate_on = options.gate_on
    if report.stopped_early:  # --sequential decided every gate early: its verdicts, with the bounds that decided them
        return _sequential_gates(report, options, baseline)
    gates = _minimum_gates(report, options)
    if baseline is not None:
        check_comparable(report, baseline.report, baseline.name)
        drop = 0.0 if options.max_drop is None else options.max_drop
        paired = None
        if baseline.samples is not None:
            samples_name = str(baseline.samples_path) if baseline.samples_path else None
            paired = paired_comparison(report, baseline.samples, baseline.name, samples_name)
            report.extra["paired"] = paired
        gates += drop_gates(report, baseline.report, drop, paired)
    gates.append(check_gate(report, options.strict, options.allow_check))
    report.gates.extend(gates)
    return gates


def _minimum_gates(report: Report, options: GateOptions) -> list[Gate]:
    """``--min-clean-acc``, ``--min-robust-acc``, ``--min-protected-robust-acc``, as set."""
    gates = []
    if options.min_clean_acc is not None:
        gates.append(
            _minimum_gate(
                report, "min_clean_acc", options.min_clean_acc, "clean_accuracy", report.clean_accuracy, options.gate_on
            )
        )
    if options.min_robust_acc is not None:
        gates.append(
            _minimum_gate(
                report,
                "min_robust_acc",
                options.min_robust_acc,
                "robust_accuracy",
                report.robust_accuracy,
                options.gate_on,
            )
        )
    if options.min_protected_robust_acc is not None:
        value = (report.extra.get("protected") or {}).get("robust_accuracy")  # None: no protected sample
        gates.append(
            _minimum_gate(
                report,
                "min_protected_robust_acc",
                options.min_protected_robust_acc,
                "protected_robust_accuracy",
                value,
                options.gate_on,
            )
        )
    return gates


def sequential_plan(
    options: GateOptions, baseline: Baseline | None = None, alpha: float = DEFAULT_ALPHA
) -> SequentialPlan:
    """The gates ``options`` set, as targets a sequential run decides (refused when none is set or alpha is wrong).

    Args:
        options: the gates to decide (:class:`GateOptions`).
        baseline: the loaded baseline, for ``--max-drop`` (None: no drop gates).
        alpha: the chance, at most, that an early verdict differs from the full run's, over all gates.
    """
    # here, not at the top: the package hardenctl.evaluation imports torch, and gates must not
    from .evaluation.sequential_plan import SequentialPlan, Target, check_plan

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
    check_plan(plan)
    return plan


def _sequential_gates(report: Report, options: GateOptions, baseline: Baseline | None) -> list[Gate]:
    """A sequential run that stopped early: each gate as its confidence sequence decided it."""
    if baseline is not None:
        check_comparable(report, baseline.report, baseline.name)
        if baseline.samples is not None:
            report.extra["paired"] = paired_on_evaluated(report, baseline.samples)
    gates = decided_gates(report, baseline.report if baseline else None)
    gates.append(check_gate(report, options.strict, options.allow_check))
    report.gates.extend(gates)
    return gates


def describe_failure(report: Report, gate: Gate, baseline_name: str = "the baseline") -> str:
    """One line naming the failed gate (and, for sanity checks, which ones and how to accept them); ``baseline_name``:
    what a ``max_drop`` gate's fall is measured from (``compare`` names OLD's file).

    Args:
        report: the gated report.
        gate: one of its failed gates.
        baseline_name: what a ``max_drop`` gate's fall is measured from.
    """
    if gate.name == "sanity_checks":
        names = [c.name for c in report.failed_checks if c.name not in report.accepted_checks]
        return (
            f"gate failed: sanity_checks: {', '.join(names)} failed (evidence of gradient masking or a broken "
            f"evaluation); fix the model or evaluation, or accept knowingly with --allow-check NAME or --no-strict"
        )
    if gate.basis == "sequential":
        relation = "dropped at least" if gate.name.startswith("max_drop") else "at most"
        limit = f"max {gate.threshold:.4f}" if gate.name.startswith("max_drop") else f"< {gate.threshold:.4f}"
        return f"gate failed: {gate.name}: {relation} {gate.value:.4f} ({limit}), {describe_decision(report, gate)}"
    if gate.name.startswith("max_drop"):
        how = " (paired, per sample)" if gate.basis == "paired" else ""
        return (
            f"gate failed: {gate.name}: dropped {gate.value:.4f} from {clean_text(baseline_name)}{how} "
            f"(max {gate.threshold:.4f})"
        )
    bound = " (95% lower bound)" if gate.basis == "lower95" else ""
    return f"gate failed: {gate.name}{bound}: {gate.value:.4f} < {gate.threshold:.4f}"


@dataclass(frozen=True)
class GateOptions:
    """The gates of one evaluation, checked when made (a mistyped option is refused before any attack runs).

    ``min_*`` are fractions in [0, 1]; ``max_drop`` (default 0 with a baseline) is applied against ``baseline``, an
    earlier report's path; ``baseline_samples`` its per-sample results (default: found beside it, see
    :func:`load_baseline`); a loaded baseline may instead be given to :func:`gate`/:func:`apply_gates`;
    ``strict=False`` or ``allow_check`` accept failed sanity checks knowingly; ``gate_on`` is point or lower.
    """

    min_clean_acc: float | None = None
    min_robust_acc: float | None = None
    min_protected_robust_acc: float | None = None
    baseline: str | Path | None = None
    baseline_samples: str | Path | None = None
    max_drop: float | None = None
    strict: bool = True
    allow_check: Sequence[str] = field(default_factory=tuple)
    gate_on: str = "point"

    def __post_init__(self) -> None:
        for value, option in (
            (self.min_clean_acc, "--min-clean-acc"),
            (self.min_robust_acc, "--min-robust-acc"),
            (self.max_drop, "--max-drop"),
            (self.min_protected_robust_acc, "--min-protected-robust-acc"),
        ):
            if value is not None and not 0 <= value <= 1:
                raise UserError(f"{option} is a fraction in [0,1], got {value}", f"pass e.g. {option} 0.45")
        if self.gate_on not in GATE_ON:
            raise UserError(
                f"--gate-on must be point or lower, got {self.gate_on!r}", "pass --gate-on point or --gate-on lower"
            )
        unknown = sorted(set(self.allow_check) - set(CHECK_NAMES))
        if unknown:
            raise UserError(f"--allow-check: unknown check {unknown[0]!r}", f"use one of {', '.join(CHECK_NAMES)}")


@dataclass
class Baseline:
    """An earlier report to compare with, and its per-sample results when found (``looked_for``: where)."""

    report: Report
    name: str = "the baseline"
    samples: SampleResults | None = None
    samples_path: Path | None = None
    looked_for: list[Path] = field(default_factory=list)

    def check(self, **fields: Any) -> None:
        """Refuse (UserError) a baseline that differs in the fields known so far (e.g. eps, norm, suite before
        loading; n and data_sha256 before attacking): a mismatch costs no attack time."""
        check_comparable(fields, self.report, self.name)


def load_baseline(path: str | Path, samples: str | Path | None = None, what: str = "the baseline report") -> Baseline:
    """The report at ``path`` and its per-sample results: ``samples``, else the file the report recorded, else
    ``NAME.samples.jsonl`` beside it; both read by the validating readers (:mod:`hardenctl.report.reader`,
    :mod:`hardenctl.evaluation.samples`), the results checked to belong to that report (``what``: how errors call it,
    followed by its path). Without any, the drop gates compare rates. Nothing here loads a model: a bad baseline is
    refused before any evaluation starts.

    Args:
        path: the baseline's report.json.
        samples: its per-sample results (None: the recorded file, else the one beside it).
        what: how errors call it.
    """
    from .evaluation.samples import (
        baseline_samples_candidates,
        load_baseline_samples,
    )  # imports torch: only when needed

    report = load_report(path)
    found, results = load_baseline_samples(path, report, samples, what)
    looked_for = [] if samples is not None else baseline_samples_candidates(path, report)
    return Baseline(report, str(path), results, found, looked_for)


def gate(
    report: Report,
    options: GateOptions | None = None,
    baseline: Baseline | Report | str | Path | None = None,
    **gate_options: Any,
) -> list[Gate]:
    """Apply the gates to ``report`` (appended to ``report.gates``) and return them; a failed one has ``passed`` False.

    ``options`` or the same names as keywords (``min_robust_acc=0.4, baseline="old.json", max_drop=0.02``, see
    :class:`GateOptions`); ``baseline`` may also be given already loaded (:func:`load_baseline`) or as a Report.

    Args:
        report: the evaluation's report; the gates are appended to ``report.gates``.
        options: the thresholds and baseline (:class:`GateOptions`).
        baseline: the baseline: a path, a loaded :class:`Baseline` or a Report (overrides ``options.baseline``).
        **gate_options: GateOptions fields as keywords, instead of ``options``.

    >>> gates = hardenctl.gate(report, min_robust_acc=0.4, baseline="old.json", max_drop=0.02)
    >>> [g.name for g in gates if not g.passed]
    """
    options = (
        dataclasses.replace(options or GateOptions(), **gate_options) if gate_options else options or GateOptions()
    )
    if baseline is None and options.baseline is not None:
        baseline = load_baseline(options.baseline, options.baseline_samples)
    elif isinstance(baseline, (str, Path)):
        baseline = load_baseline(baseline, options.baseline_samples)
    return apply_gates(report, options, baseline)
