"""Per-sample attack losses (logits, labels) -> loss to *maximise*."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    """Per-sample cross-entropy, computed in fp32 whatever the logits' precision.

    Args:
        logits: (N, classes) scores.
        y: (N,) true labels.
    """
    return F.cross_entropy(logits.float(), y, reduction="none")


def margin(logits: Tensor, y: Tensor) -> Tensor:
    """max_{k≠y} z_k − z_y: positive exactly when the point is misclassified.

    Args:
        logits: (N, classes) scores.
        y: (N,) true labels.
    """
    logits = logits.float()
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], float("-inf")).amax(dim=1)
    return other - true


def dlr(logits: Tensor, y: Tensor) -> Tensor:
    """Difference of Logits Ratio (Croce & Hein 2020): shift- and scale-invariant.

    −(z_y − max_{k≠y} z_k) / (z_π1 − z_π3); invariant to rescaling the logits, so a
    model that saturates softmax (and zeroes CE gradients) cannot hide behind it.

    Args:
        logits: (N, classes) scores; at least 3 classes.
        y: (N,) true labels.
    """
    logits = logits.float()
    sorted_logits, _ = logits.sort(dim=1, descending=True)
    denom = sorted_logits[:, 0] - sorted_logits[:, 2] + 1e-12
    return margin(logits, y) / denom


def dlr_targeted(logits: Tensor, y: Tensor, target: Tensor) -> Tensor:
    """Targeted DLR: −(z_y − z_t) / (z_π1 − (z_π3 + z_π4) / 2).

    Args:
        logits: (N, classes) scores; at least 4 classes.
        y: (N,) true labels.
        target: (N,) the class each point is pushed towards.
    """
    logits = logits.float()
    sorted_logits, _ = logits.sort(dim=1, descending=True)
    true = logits.gather(1, y[:, None]).squeeze(1)
    tgt = logits.gather(1, target[:, None]).squeeze(1)
    denom = sorted_logits[:, 0] - 0.5 * (sorted_logits[:, 2] + sorted_logits[:, 3]) + 1e-12
    return (tgt - true) / denom
