"""Release gates: the thresholds CI fails a build on (exit code 1).

A failed sanity check fails the gate by default: a masked model must not pass ``--min-robust-acc``
with a warning nobody reads in CI. ``--no-strict`` or ``--allow-check NAME`` accept failures
knowingly, and the report records which (``accepted_checks``).
"""
from __future__ import annotations

from typing import Sequence

from .errors import UserError
from .report import Gate, Report

# Every sanity check hardenctl.evaluate can report (each can fail; see README "Sanity checks").
CHECK_NAMES = ("perturbations_in_bounds", "input_gradients_nonzero", "eot_used_for_randomized_model",
               "square_not_stronger_than_whitebox", "robust_accuracy_non_increasing_in_eps",
               "near_zero_accuracy_at_large_eps", "eval_mode_and_buffers_unchanged")

# Fields that must agree for two reports to be compared: (report attribute, how to say it).
COMPARABLE = (("eps", "ε"), ("norm", "norm"), ("suite", "suite"), ("attacks", "attacks"), ("attack_list", "attack settings"), ("n", "n"),
              ("data_sha256", "data (sha256 of the evaluated pixels and labels)"))


def check_comparable(current: Report | dict, baseline: Report, baseline_name: str = "the baseline") -> None:
    """Refuse (UserError) a baseline made with another ε, norm, suite, attacks, n or data, naming the first difference.

    ``current`` is a report, or a dict of the fields known before evaluating (so a mismatch costs no attack time).
    """
    for attribute, label in COMPARABLE:
        now = current.get(attribute) if isinstance(current, dict) else getattr(current, attribute)
        then = getattr(baseline, attribute)
        if attribute == "attacks":  # the attack names in run order (report.attacks maps name -> accuracy)
            now, then = (list(v) if v is not None else None for v in (now, then))
        if now is None:
            continue
        if attribute == "eps":
            same = abs(float(now) - float(then)) <= 1e-9
        elif attribute == "attack_list":
            same = not then or list(now) == list(then)  # reports older than attack_list are compared on suite alone
        else:
            same = now == then
        if not same:
            shown = (lambda v: f"{v:.5g}") if attribute == "eps" else (lambda v: str(v)[:80])
            raise UserError(f"{baseline_name} was made with {label} {shown(then)} but this evaluation uses {shown(now)}",
                            "compare reports made with the same --eps, --norm, --suite/--attacks, --n and data")


def check_gate(report: Report, strict: bool = True, allowed: Sequence[str] = ()) -> Gate:
    """``sanity_checks``: failed checks not accepted by ``--no-strict`` / ``--allow-check`` fail the gate."""
    accepted = {c.name for c in report.checks} if not strict else set(allowed)
    failing = [c.name for c in report.failed_checks if c.name not in accepted]
    report.accepted_checks = sorted(c.name for c in report.failed_checks if c.name in accepted)
    return Gate("sanity_checks", 0, len(failing), not failing)


def apply_gates(
    report: Report,
    min_clean_acc: float | None = None,
    min_robust_acc: float | None = None,
    baseline: Report | None = None,
    max_drop: float | None = None,
    strict: bool = True,
    min_protected_robust_acc: float | None = None,
    allowed_checks: Sequence[str] = (),
) -> list[Gate]:
    """Append the requested gates (and the sanity-check gate) to ``report.gates`` and return them."""
    gates = []
    if min_clean_acc is not None:
        gates.append(Gate("min_clean_acc", min_clean_acc, report.clean_accuracy, report.clean_accuracy >= min_clean_acc))
    if min_robust_acc is not None:
        gates.append(Gate("min_robust_acc", min_robust_acc, report.robust_accuracy, report.robust_accuracy >= min_robust_acc))
    if min_protected_robust_acc is not None:
        value = (report.extra.get("protected") or {}).get("robust_accuracy")
        value = 0.0 if value is None else value  # no protected sample evaluated: nothing shown robust
        gates.append(Gate("min_protected_robust_acc", min_protected_robust_acc, value, value >= min_protected_robust_acc))
    if baseline is not None:
        check_comparable(report, baseline)
        drop = 0.0 if max_drop is None else max_drop
        for metric in ("clean_accuracy", "robust_accuracy"):
            fall = getattr(baseline, metric) - getattr(report, metric)
            gates.append(Gate(f"max_drop_{metric}", drop, fall, fall <= drop + 1e-12))
    gates.append(check_gate(report, strict, allowed_checks))
    report.gates.extend(gates)
    return gates


def describe_failure(report: Report, gate: Gate) -> str:
    """One line naming the failed gate (and, for sanity checks, which ones and how to accept them)."""
    if gate.name == "sanity_checks":
        names = [c.name for c in report.failed_checks if c.name not in report.accepted_checks]
        return (f"gate failed: sanity_checks: {', '.join(names)} failed (evidence of gradient masking or a broken "
                f"evaluation); fix the model or evaluation, or accept knowingly with --allow-check NAME or --no-strict")
    if gate.name.startswith("max_drop"):
        return f"gate failed: {gate.name}: dropped {gate.value:.4f} from the baseline (max {gate.threshold:.4f})"
    return f"gate failed: {gate.name}: {gate.value:.4f} < {gate.threshold:.4f}"
