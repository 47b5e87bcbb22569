"""Which epoch ships: the best or last epoch, among the healthy ones (never one the overfitting guard flagged).

A pure function of the epoch records, so that what ``model.safetensors`` holds, and what the report says about it,
are decided in one place: the guard's verdicts (``collapsed``) win over ``select``, and without a held-out split
(``holdout_fraction: 0``) nothing can rank the epochs, so the last healthy one ships.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable


def healthy_epochs(history: list[dict[str, Any]]) -> list[int]:
    """The epochs (1-based) not marked collapsed: the only candidates for the saved epoch.

    Args:
        history: the epoch records.
    """
    return [h["epoch"] for h in history if not h.get("collapsed")]


def select_best(history: list[dict[str, Any]], by: str = "robust", epochs: Iterable[int] | None = None) -> int:
    """The epoch (1-based) with the highest held-out ``by`` accuracy (robust or clean; ties: the other, then later).

    Only ``epochs`` (default: all) compete (:meth:`Recipe.selectable_epochs`); with none of them scored (no held-out
    split), the last of them; with none given at all, the last epoch.

    Args:
        history: the epoch records.
        by: the held-out accuracy that ranks them (``robust`` or ``clean``).
        epochs: the epochs that compete (None: all).
    """
    other = "clean" if by == "robust" else "robust"
    allowed = sorted(set(epochs)) if epochs is not None else None
    scored = [
        (h[f"holdout_{by}_accuracy"], h[f"holdout_{other}_accuracy"] or 0.0, h["epoch"])
        for h in history
        if h.get(f"holdout_{by}_accuracy") is not None and (allowed is None or h["epoch"] in allowed)
    ]
    if scored:
        return max(scored)[2]
    return allowed[-1] if allowed else history[-1]["epoch"]


@dataclass(frozen=True)
class SavedEpoch:
    """The epoch that ships and why: ``selected`` is ``best`` or ``last``; ``other`` the other candidate."""

    selected: str
    epoch: int
    other: int
    healthy: bool  # False only when every epoch collapsed: then the last, collapsed, epoch ships
    passed_over: int | None = None  # the collapsed epoch ``select`` would have shipped, when the guard overrode it


def choose_saved_epoch(
    history: list[dict[str, Any]], select: str, by: str, selectable: Iterable[int], has_holdout: bool
) -> SavedEpoch:
    """The saved epoch: ``select: best`` → the best healthy selectable epoch by held-out ``by`` accuracy; ``select:
    last`` (or no held-out split) → the last healthy epoch. Every epoch collapsed: the last one, said so.

    Args:
        history: the epoch records.
        select: the recipe's ``select`` (``best`` or ``last``).
        by: the held-out accuracy that ranks epochs (``robust`` or ``clean``).
        selectable: the epochs ``best`` may pick (:meth:`Recipe.selectable_epochs`).
        has_holdout: whether a held-out split scored the epochs.
    """
    last = history[-1]["epoch"]
    healthy = healthy_epochs(history)
    selected = "best" if select == "best" and has_holdout else "last"
    candidates = [e for e in selectable if e in set(healthy)]
    best = select_best(history, by, candidates) if candidates else last
    last_healthy = healthy[-1] if healthy else last
    if selected == "best":
        return SavedEpoch(selected, best, last, bool(healthy))
    other = (
        best if best != last_healthy else last
    )  # the collapsed last epoch, evaluated beside it, shows what was avoided
    return SavedEpoch(selected, last_healthy, other, bool(healthy), last if last_healthy != last else None)
