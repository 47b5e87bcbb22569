"""Protected classes: resolving them, their cost matrix, and their metrics.

Why a module of its own: evaluation (``hardenctl eval --protected``) and the cost-sensitive
recipe both need these, and evaluation must not depend on a recipe. The cost matrix is our
design [ours] (RECIPES.md, "cost-sensitive"): C_jj = 0, C_jk = ``cost`` if the true class j is
protected, else 1.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import torch
from torch import Tensor

from .errors import UserError


def resolve_protected(values: Iterable[Any], class_names: Sequence[str]) -> list[int]:
    """Class names or ids (ints or digit strings) → sorted unique ids; a one-line UserError for unknown ones."""
    names = [str(n) for n in class_names]
    ids = set()
    for value in values:
        text = value.strip() if isinstance(value, str) else value
        if isinstance(text, str) and text in names:
            ids.add(names.index(text))
        elif (isinstance(text, int) and not isinstance(text, bool)) or (isinstance(text, str) and text.isdigit()):
            index = int(text)
            if not 0 <= index < len(names):
                raise UserError(
                    f"protected class id {index} is out of range",
                    f"use 0..{len(names) - 1} or one of: {', '.join(names)}",
                )
            ids.add(index)
        else:
            raise UserError(f"unknown protected class {value!r}", f"use a class id or one of: {', '.join(names)}")
    if not ids:
        raise UserError("no protected class given", f"pass e.g. --protected 3,5 (ids or names: {', '.join(names)})")
    return sorted(ids)


def cost_matrix(num_classes: int, protected: Iterable[int], cost: float) -> Tensor:
    """C with C_jj = 0, C_jk = cost for a protected j, else 1."""
    protected = list(protected)
    if any(not 0 <= j < num_classes for j in protected):
        raise UserError(
            f"protected classes {protected} are not all below the model's {num_classes} classes",
            f"give ids in 0..{num_classes - 1}",
        )
    rows = torch.ones(num_classes)
    rows[protected] = float(cost)
    return rows.unsqueeze(1) * (1 - torch.eye(num_classes))


def protected_metrics(
    y: Tensor,
    clean_correct: Tensor,
    robust_prediction: Tensor,
    protected: Sequence[int],
    cost: float,
    num_classes: int,
    robust: Tensor | None = None,
    draws: int = 1,
) -> dict[str, Any]:
    """Protected-class clean/robust accuracy (over samples whose TRUE class is protected) and Σ C_{y,ŷ}/N.

    ``clean_correct`` is per sample (a fraction of ``draws`` for randomised models), ``robust_prediction``
    ŷ the prediction at the worst-case adversarial point; ``robust`` defaults to ŷ == y. Rates are counts divided in
    Python (a float32 mean stores 2/3 as 0.6666666865), the counts kept beside them.
    """
    y, robust_prediction = y.long().cpu(), robust_prediction.long().cpu()
    robust = (robust_prediction == y) if robust is None else robust.cpu().bool()
    mask = torch.isin(y, torch.tensor(list(protected), dtype=torch.long))
    count, n = int(mask.sum()), len(y)
    matrix = cost_matrix(num_classes, protected, cost).double()
    hits = sum(round(value * draws) for value in clean_correct.cpu()[mask].tolist())  # whole draws: no float32 rounding
    clean = hits if draws == 1 else hits / draws
    robust_correct = int(robust[mask].sum())
    return {
        "classes": list(protected),
        "cost": float(cost),
        "n": count,
        "clean_correct": clean,
        "robust_correct": robust_correct,
        "clean_accuracy": clean / count if count else None,
        "robust_accuracy": robust_correct / count if count else None,
        "cost_weighted_robust_error": float(matrix[y, robust_prediction].sum() / n) if n else 0.0,
    }


__all__ = ["cost_matrix", "protected_metrics", "resolve_protected"]
