"""The catastrophic-overfitting guard of one-step (FGSM) adversarial training.

Why: FGSM training, even with a random start, can suddenly learn to defeat the one-step attack only: within an epoch
PGD accuracy falls to about 0 while FGSM accuracy stays high or rises ("catastrophic overfitting", Wong, Rice, Kolter,
ICLR 2020, who stop early when PGD accuracy drops by 0.2). After every epoch of an ``fgsm-rs``/``fgsm`` run the engine
scores the held-out monitor images with FGSM too (the input model as well, before epoch 1), and calls the epoch
*collapsed* when, against the reference = the earlier healthy epoch (or the input model) with the best PGD accuracy,

* its PGD accuracy fell by at least ``co_drop``, and
* its FGSM accuracy fell by at most ``co_fgsm_drop``: the one-step attack still sees the robustness PGD no longer finds.

A run that merely degrades (both accuracies fall) is not a collapse; one whose PGD accuracy never rose cannot collapse.
Then, by ``co_guard``: ``stop`` ends the run; ``lower`` goes back to the best healthy epoch (weights, optimiser, EMA),
or, with none yet, goes on from the collapsed weights, and multiplies the training ε by ``co_eps_factor`` and the lr by
``co_lr_factor`` for the rest of the run (again at every further collapse); ``warn`` only records it; ``off`` does not
measure. A collapsed epoch never ships, whatever ``select`` says (:mod:`.selection`), unless every epoch collapsed.

Without a held-out split (``holdout_fraction: 0``) the guard reads the training monitor's images instead, and there is
no input-model reference: the first epoch cannot be flagged, later ones are compared with the earlier epochs.

Everything is recorded in the epoch's log line, so a resumed run takes the same decisions: :func:`decide` (before an
epoch) and :func:`verdict` (after it) are pure functions of the epoch records.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..recipes import RecipeConfig
from .selection import healthy_epochs, select_best


def guard_active(config: RecipeConfig) -> bool:
    """The guard watches one-step training attacks (it costs one FGSM pass over the monitor images per epoch).

    Args:
        config: the recipe config (``attack``, ``co_guard``).
    """
    return config.attack in ("fgsm-rs", "fgsm") and config.co_guard != "off"


def robust_key(record: dict[str, Any]) -> str:
    """The PGD accuracy the guard reads: held-out, or the training monitor's when there is no held-out split.

    Args:
        record: an epoch's record.
    """
    return "holdout_robust_accuracy" if record.get("holdout_robust_accuracy") is not None else "train_robust_accuracy"


def reference(
    record: dict[str, Any], earlier: list[dict[str, Any]], input_scores: tuple | None
) -> tuple[float, float | None, str] | None:
    """(PGD, FGSM accuracy, name) of the best earlier healthy epoch by PGD accuracy, or of the input model; None if
    none.

    Args:
        record: the epoch being judged.
        earlier: the records of the epochs before it.
        input_scores: the input model's held-out (clean, PGD, FGSM) accuracy (None: unknown).
    """
    key = robust_key(record)
    candidates = [
        (h[key], h.get("guard_fgsm_accuracy"), f"epoch {h['epoch']}")
        for h in earlier
        if not h.get("collapsed") and h.get(key) is not None
    ]
    if key.startswith("holdout") and input_scores is not None and input_scores[1] is not None:  # input: held-out
        candidates.append((input_scores[1], input_scores[2] if len(input_scores) > 2 else None, "the input model"))
    return max(candidates, key=lambda c: c[0]) if candidates else None


def is_collapse(
    config: RecipeConfig, record: dict[str, Any], earlier: list[dict[str, Any]], input_scores: tuple | None
) -> bool:
    """Whether ``record`` (an epoch with ``guard_fgsm_accuracy``) shows catastrophic overfitting against the
    ``earlier`` epochs.

    Args:
        config: the recipe config (``co_drop``, ``co_fgsm_drop``).
        record: the epoch being judged.
        earlier: the records of the epochs before it.
        input_scores: the input model's held-out (clean, PGD, FGSM) accuracy (None: unknown).
    """
    fgsm, pgd = record.get("guard_fgsm_accuracy"), record.get(robust_key(record))
    ref = reference(record, earlier, input_scores)
    if fgsm is None or pgd is None or ref is None or ref[1] is None:
        return False
    return ref[0] - pgd >= config.co_drop and ref[1] - fgsm <= config.co_fgsm_drop


def scales(config: RecipeConfig, history: list[dict[str, Any]]) -> tuple[float, float]:
    """(ε factor, lr factor) in force after ``history``: each collapse of a ``lower`` run multiplies them once.

    Args:
        config: the recipe config (``co_guard``, ``co_eps_factor``, ``co_lr_factor``).
        history: the epoch records so far.
    """
    if config.co_guard != "lower":
        return 1.0, 1.0
    collapses = sum(1 for h in history if h.get("collapsed"))
    return config.co_eps_factor**collapses, config.co_lr_factor**collapses


def stopped(config: RecipeConfig, history: list[dict[str, Any]]) -> bool:
    """Whether a ``stop`` run has ended at its collapse (also after a resume).

    Args:
        config: the recipe config (``co_guard``).
        history: the epoch records so far.
    """
    return config.co_guard == "stop" and any(h.get("collapsed") for h in history)


def restore_epoch(config: RecipeConfig, history: list[dict[str, Any]], by: str = "robust") -> int | None:
    """For ``lower`` right after a collapse: the healthy epoch to go back to (best held-out ``by`` accuracy), if any.

    Args:
        config: the recipe config (``co_guard``).
        history: the epoch records so far.
        by: the held-out accuracy that ranks epochs (``robust`` or ``clean``).
    """
    if config.co_guard != "lower" or not history or not history[-1].get("collapsed"):
        return None
    healthy = healthy_epochs(history)
    return select_best(history, by, healthy) if healthy else None


@dataclass(frozen=True)
class Decision:
    """What the guard makes of the epochs so far, before the next one."""

    stop: bool = False  # ``stop`` after a collapse: no more epochs
    back_to: int | None = None  # ``lower`` right after a collapse: the healthy epoch whose weights to reload
    eps_scale: float = 1.0  # the training ε's factor for the epoch
    lr_scale: float = 1.0  # the lr's factor for the epoch


def decide(config: RecipeConfig, history: list[dict[str, Any]], by: str = "robust") -> Decision:
    """The guard's decision before the next epoch, from the epoch records alone (so a resumed run decides alike).

    Args:
        config: the recipe config (``co_guard`` and its factors).
        history: the epoch records so far.
        by: the held-out accuracy that ranks epochs (``robust`` or ``clean``).
    """
    eps_scale, lr_scale = scales(config, history)
    return Decision(stopped(config, history), restore_epoch(config, history, by), eps_scale, lr_scale)


def verdict(
    config: RecipeConfig, record: dict[str, Any], earlier: list[dict[str, Any]], input_scores: tuple | None
) -> dict[str, Any]:
    """The guard's fields for an epoch's record: ``collapsed`` and, when it did, the ``guard`` line.

    Args:
        config: the recipe config.
        record: the epoch being judged (with ``guard_fgsm_accuracy``).
        earlier: the records of the epochs before it.
        input_scores: the input model's held-out (clean, PGD, FGSM) accuracy (None: unknown).
    """
    collapsed = is_collapse(config, record, earlier, input_scores)
    if not collapsed:
        return {"collapsed": False}
    return {"collapsed": True, "guard": describe_collapse(config, record, earlier, input_scores)}


def describe_collapse(
    config: RecipeConfig, record: dict[str, Any], earlier: list[dict[str, Any]], input_scores: tuple | None
) -> str:
    """The collapse in one line, for logs and the report: what fell, against what, and what the run does next.

    Args:
        config: the recipe config (``co_guard`` and its factors).
        record: the collapsed epoch.
        earlier: the records of the epochs before it.
        input_scores: the input model's held-out (clean, PGD, FGSM) accuracy (None: unknown).
    """
    key = robust_key(record)
    best, best_fgsm, where = reference(record, earlier, input_scores)
    lowered = f"with eps × {config.co_eps_factor:g} and lr × {config.co_lr_factor:g}"
    if healthy_epochs(earlier):
        action = {
            "stop": "training stopped; the saved epoch is chosen among the healthy epochs before it",
            "lower": f"training goes on from the best healthy epoch {lowered}",
            "warn": "training went on (co_guard: warn); the epoch cannot be the saved one",
        }[config.co_guard]
    else:  # no earlier epoch is healthy (the first collapsed against the input model): nothing to save or go back to
        action = {
            "stop": "training stopped; no epoch before it was healthy, so the saved model is this collapsed one",
            "lower": f"no healthy epoch to go back to: training goes on from these collapsed weights {lowered}",
            "warn": "training went on (co_guard: warn); the epoch cannot be the saved one while a later one is healthy",
        }[config.co_guard]
    split = "held-out" if key.startswith("holdout") else "training-monitor"
    return (
        f"catastrophic overfitting at epoch {record['epoch']}: {split} PGD accuracy fell to {record[key]:.1%} from "
        f"{best:.1%} ({where}) while FGSM accuracy stayed at {record['guard_fgsm_accuracy']:.1%} ({best_fgsm:.1%} "
        f"there); {action}"
    )
