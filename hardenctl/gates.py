"""Release gates: the thresholds CI fails a build on (exit code 1)."""
from __future__ import annotations

from .report import Gate, Report


def apply_gates(
    report: Report,
    min_clean_acc: float | None = None,
    min_robust_acc: float | None = None,
    baseline: Report | None = None,
    max_drop: float | None = None,
    strict: bool = False,
    min_protected_robust_acc: float | None = None,
) -> list[Gate]:
    """Append the requested gates to ``report.gates`` and return them."""
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
        drop = 0.0 if max_drop is None else max_drop
        for metric in ("clean_accuracy", "robust_accuracy"):
            fall = getattr(baseline, metric) - getattr(report, metric)
            gates.append(Gate(f"max_drop_{metric}", drop, fall, fall <= drop + 1e-12))
    if strict:
        failed = len(report.failed_checks)
        gates.append(Gate("strict_checks", 0, failed, failed == 0))
    report.gates.extend(gates)
    return gates


def describe_failure(gate: Gate) -> str:
    """One line naming the failed gate."""
    if gate.name == "strict_checks":
        return f"gate failed: strict_checks: {int(gate.value)} sanity check(s) failed"
    if gate.name.startswith("max_drop"):
        return f"gate failed: {gate.name}: dropped {gate.value:.4f} from the baseline (max {gate.threshold:.4f})"
    return f"gate failed: {gate.name}: {gate.value:.4f} < {gate.threshold:.4f}"
