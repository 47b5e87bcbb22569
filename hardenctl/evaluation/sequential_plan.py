"""What ``--sequential`` decides, built by the caller before any image is attacked (the round loop is
:mod:`hardenctl.evaluation.rounds`): the gates, their thresholds and bases, the error allowed, the baseline's values."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import UserError

MIN_GATES = {
    "min_clean_acc": "clean_accuracy",
    "min_robust_acc": "robust_accuracy",
    "min_protected_robust_acc": "protected_robust_accuracy",
}
DROP_GATES = {"max_drop_clean_accuracy": "clean_drop", "max_drop_robust_accuracy": "robust_drop"}
ORDER_SEED = 0x5EC  # mixed into --seed, so the order is not the batches' own random stream


@dataclass(frozen=True)
class Target:
    """One gate to decide early: its name, its threshold and how the full run would judge it (``basis``: point or
    lower95 for a minimum; paired or rates for a drop, where a rates drop is a minimum on the new accuracy)."""

    gate: str
    threshold: float
    basis: str = "point"


@dataclass(frozen=True)
class SequentialPlan:
    """What ``--sequential`` decides: the gates (``targets``), the overall error ``alpha`` (split over the gated
    quantities), and for paired drops the baseline's per-sample results by index (``baseline_clean``,
    ``baseline_robust``); for a rates drop ``baseline_rates`` holds the baseline's (clean, robust) accuracy."""

    targets: tuple[Target, ...]
    alpha: float = 0.05
    baseline_clean: tuple[float, ...] | None = None
    baseline_robust: tuple[float, ...] | None = None
    baseline_rates: tuple[float, float] | None = None

    def key(self) -> dict[str, Any]:
        """What a resumed run must share with the killed one (the order comes from ``--seed``)."""
        return {
            "alpha": self.alpha,
            "targets": [[t.gate, t.threshold, t.basis] for t in self.targets],
            "baseline": None if self.baseline_robust is None else [sum(self.baseline_clean), sum(self.baseline_robust)],
            "baseline_rates": list(self.baseline_rates) if self.baseline_rates else None,
        }


def check_plan(plan: SequentialPlan) -> None:
    """Refuse (one line, exit 2) a plan that cannot decide anything: no gate, or an alpha outside (0, 0.5]."""
    if not 0 < plan.alpha <= 0.5:
        raise UserError(
            f"--alpha must be in (0, 0.5], got {plan.alpha}",
            "pass e.g. --alpha 0.05 (the chance an early verdict differs from the full run's)",
        )
    if not plan.targets:
        raise UserError(
            "--sequential stops once every gate is decided, and no gate is set",
            "pass --min-robust-acc, --min-clean-acc, --min-protected-robust-acc or --baseline/--max-drop",
        )
