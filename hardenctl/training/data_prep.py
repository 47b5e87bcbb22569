"""Training data: the held-out split that picks the epoch, empty-data checks, CIFAR-style batch augmentation."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..data import Dataset
from ..errors import UserError
from ..recipes import RecipeConfig
from .runtime import step_seed


def holdout_count(n: int, fraction: float) -> int:
    """Images held out of ``n`` at ``fraction`` (rounded; 0 for fraction 0).

    Args:
        n: the training images.
        fraction: the recipe's ``holdout_fraction``.
    """
    return int(round(fraction * n)) if fraction > 0 else 0


def check_data(train_data: Dataset, eval_data: Dataset | None, fraction: float) -> None:
    """Refuse data that cannot train, pick an epoch or be reported on, before anything is written to --out.

    A held-out split that rounds to 0 images would silently turn ``select: best`` into ``last``, so it is refused
    rather than skipped: the user asked for one (holdout_fraction > 0).

    Args:
        train_data: the training data.
        eval_data: ``--eval-data`` (None: the report uses the held-out split).
        fraction: the recipe's ``holdout_fraction``.
    """
    n = len(train_data)
    if n == 0:
        raise UserError(
            f"no samples to train on: --data {train_data.source} has 0 images",
            "pass training data with at least one image",
        )
    if eval_data is not None and len(eval_data) == 0:
        raise UserError(
            f"no samples to evaluate on: --eval-data {eval_data.source} has 0 images",
            "pass evaluation data with at least one image, or leave --eval-data out to report on the held-out split",
        )
    if fraction > 0 and holdout_count(n, fraction) == 0:
        raise_fraction = f"raise holdout_fraction to at least {1 / n:.3g}" if 1 / n <= 0.5 else "use more training data"
        other = (
            "--set holdout_fraction=0 to save the last epoch"
            if eval_data is not None
            else "pass --eval-data with --set holdout_fraction=0 (the last epoch is then saved)"
        )
        raise UserError(
            f"the held-out split of {n} images at holdout_fraction {fraction:g} rounds to 0 images",
            f"{raise_fraction}, or {other}",
        )


@dataclass(frozen=True)
class DataSplit:
    """The images a run trains on and the held-out ones that pick its epoch (None: ``holdout_fraction`` 0)."""

    train: Dataset
    holdout: Dataset | None = None


def split_holdout(data: Dataset, fraction: float, seed: int) -> DataSplit:
    """The training part and the held-out part of ``data``, from a seeded permutation; no held-out part for fraction 0.

    A fraction that rounds to 0 images also gives none: :func:`check_data` refuses that case first.

    Args:
        data: the training data as given.
        fraction: the share held out (the recipe's ``holdout_fraction``).
        seed: the run's seed (the same split on every platform).
    """
    count = holdout_count(len(data), fraction)
    if count == 0:
        return DataSplit(data, None)
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(step_seed(seed, 0x401D)))
    holdout = data.take(order[:count])
    holdout.source = f"{data.source} (held-out {count})"
    return DataSplit(data.take(order[count:]), holdout)


def augment(
    x: Tensor,
    config: RecipeConfig,
    generator: torch.Generator,
    rank: int = 0,
    world_size: int = 1,
    mode: str | None = None,
) -> Tensor:
    """CIFAR-style augmentation: random crop after zero padding and/or horizontal flip.

    The random parameters are drawn for the whole global batch (``len(x) * world_size``) and
    this process takes its share (positions ``rank::world_size``, as ``DistributedSampler`` lays
    batches out), so a run's augmentation does not depend on the number of processes.

    Args:
        x: this process's batch, [0, 1] pixels.
        config: the recipe config (``augment``, ``crop_padding``).
        generator: the step's seeded generator.
        rank: this process.
        world_size: the processes.
        mode: what ``augment: auto`` resolved to (:func:`~.batches.augmentation_mode`; None: ``config.augment``).
    """
    mode = mode or config.augment  # what `augment: auto` resolved to (harden.batches.augmentation_mode)
    if mode == "auto":  # batch augmentation is the small-image branch of auto
        mode = "crop-flip"
    if mode in ("none", "timm"):
        return x
    batch, channels, height, width = x.shape
    total = batch * world_size
    if "crop" in mode and config.crop_padding > 0:
        pad = config.crop_padding
        offsets = torch.randint(0, 2 * pad + 1, (total, 2), generator=generator)[rank::world_size].to(x.device)
        padded = F.pad(x, (pad, pad, pad, pad))
        rows = offsets[:, 0, None] + torch.arange(height, device=x.device)
        cols = offsets[:, 1, None] + torch.arange(width, device=x.device)
        index = torch.arange(batch, device=x.device)[:, None, None, None]
        x = padded[
            index,
            torch.arange(channels, device=x.device)[None, :, None, None],
            rows[:, None, :, None],
            cols[:, None, None, :],
        ]
    if "flip" in mode:
        flip = (torch.rand(total, generator=generator) < 0.5)[rank::world_size].to(x.device)
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    return x
