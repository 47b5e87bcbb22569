"""Training batches of one epoch, whatever the data is: in-memory arrays or photos streamed from folders and tars.

Two augmentations, picked by the recipe's ``augment`` (``auto``: by the model's input size):

* ``timm``: timm's train transform (RandomResizedCrop at the input size, flip, optional auto-augment, the data
  config's interpolation) applied per sample in DataLoader workers, each sample's randomness a pure function of
  (seed, epoch, sample index) — for photos of 64 px and more;
* ``crop-flip`` / ``crop`` / ``flip`` / ``none``: CIFAR's pad-crop and flip applied to the whole batch
  (:func:`~hardenctl.training.data_prep.augment`), seeded by (seed, epoch, step) — for small images.

Either way a resumed run repeats an uninterrupted one exactly on CPU, whatever the number of workers.
"""

from __future__ import annotations

from typing import Any, Iterator

import torch
from torch import Tensor

from ..data import ArrayDataset, TrainDataset, choose_augmentation, eval_transform, make_loader, train_transform
from ..recipes import RecipeConfig
from .plan import EpochPlan


def augmentation_mode(config: RecipeConfig, data_config: Any) -> str:
    """``auto`` → ``timm`` for inputs of 64 px and more, else CIFAR's ``crop-flip``; other values as given.

    Args:
        config: the recipe config (``augment``).
        data_config: the model's data config (its input size decides ``auto``); None: unknown, small images.
    """
    if config.augment != "auto":
        return config.augment
    if data_config is None or data_config.input_size is None:
        return "crop-flip"
    return "timm" if choose_augmentation(data_config) == "timm" else "crop-flip"


def epoch_batches(
    plan: EpochPlan, order: Tensor, epoch: int, config: RecipeConfig, seed: int, workers: int | None
) -> Iterator[tuple[Tensor, Tensor]]:
    """``plan.steps`` batches ``(x float [0, 1], y)`` of this process's ``order``; in ``timm`` mode they come augmented.

    Args:
        plan: the epochs' plan (training images, this process's batch size, steps, data config, channels).
        order: this process's image positions for the epoch.
        epoch: the epoch (0-based; seeds the per-sample augmentation).
        config: the recipe config (augmentation settings).
        seed: the run's seed.
        workers: DataLoader workers for decoded images (None: the default).
    """
    train_set, batch_size, steps = plan.train_set, plan.local_batch, plan.steps
    mode = augmentation_mode(config, plan.data_config)
    if mode != "timm" and isinstance(train_set, ArrayDataset):  # small in-memory images: index the tensor, no workers
        for step in range(steps):
            index = order[step * batch_size : (step + 1) * batch_size]
            x = train_set.x[index]
            yield (x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()), train_set.y[index]
        return
    if mode == "timm":
        transform = train_transform(
            plan.data_config, plan.channels, scale=tuple(config.rrc_scale), auto_augment=config.auto_augment or None
        )
    else:  # streamed small images: decode at the input size; the batch augmentation follows in the loop
        transform = eval_transform(plan.data_config, plan.channels)
    samples = TrainDataset(train_set, transform, seed=seed)
    keys = [(epoch, int(i)) for i in order[: steps * batch_size]]
    yield from make_loader(samples, batch_size, positions=keys, workers=workers, seed=seed + epoch, drop_last=True)
