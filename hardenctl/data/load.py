"""``load_dataset``: one entry point from a ``--data`` spec to a dataset prepared as the model expects."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..errors import UserError, missing_file
from .arrays import BUILTIN, ArrayDataset, load_cifar_batches, load_digits, load_npz
from .base import Dataset
from .folders import FolderDataset, open_folder, squash_config
from .transforms import eval_transform

if TYPE_CHECKING:
    from ..models.data_config import DataConfig


def prepare_arrays(data: ArrayDataset, config: "DataConfig | None") -> ArrayDataset:
    """In-memory images through the same eval transform as folders when their size differs from the
    config's (or a crop is declared). Arrays at the input size with no crop declared are used as they are:
    every image of an array has one size, and RobustBench evaluates CIFAR's 32×32 arrays uncropped (photos
    in folders always get the eval transform, as timm's ``validate.py`` prepares them).

    Args:
        data: in-memory images (uint8).
        config: the model's data config; None: the arrays as they are.
    """
    if config is None or len(data) == 0 or data.channels not in (1, 3):
        return data
    if config.input_size is not None and tuple(config.input_size) == data.image_size and not config.crop_declared:
        return data
    if config.input_size is None:
        if not config.crop_declared:
            return data
        from dataclasses import replace

        config = replace(config, input_size=data.image_size)
    transform = eval_transform(config, data.channels, torch.uint8)
    return data.transformed(transform, transform.description + f" (from {data.image_size[0]}x{data.image_size[1]})")


def load_dataset(
    spec: str,
    split: str = "test",
    n: int | None = None,
    data_config: "DataConfig | None" = None,
    in_chans: int | None = None,
    workers: int | None = None,
    skip_unreadable: bool = False,
    *,
    size: tuple[int, int] | None = None,
) -> Dataset:
    """Load ``spec``: a built-in name, an ``.npz``, a CIFAR batch directory (in memory), or a directory or
    ``.tar`` of class folders (streamed through timm's eval transform, ``workers`` decoding).

    Args:
        spec: ``digits``/``digits-train``/``digits-test``, an ``.npz``, a CIFAR batch directory, or a directory
            or ``.tar`` of class folders.
        split: ``train`` or ``test``, where a source has both (CIFAR batches).
        n: trims early, so a huge folder is never read past its first ``n`` images (None: all).
        data_config: how images are resized and cropped (None: folders at their own size, which their first
            images must share).
        in_chans: reads photos as grey (1) or RGB (3, the default) and repeats grey arrays to 3 channels (None
            keeps arrays as stored).
        workers: DataLoader processes decoding a folder (None: this process's share of the cores).
        skip_unreadable: drop corrupt images (counted in ``notes`` and ``skipped``) instead of refusing them.
        size: the old ``--resize`` for folders: a bilinear squash to (H, W).
    """
    if size is not None and data_config is None:
        data_config = squash_config(size)
    if spec in BUILTIN:
        data = load_digits({"digits": "all", "digits-train": "train", "digits-test": "test"}[spec]).head(n)
        return _finish_arrays(data, data_config, in_chans, size)
    path = Path(spec)
    if not path.exists():
        raise missing_file(spec, "data")
    if path.is_file():
        if path.suffix == ".npz":
            return _finish_arrays(load_npz(path).head(n), data_config, in_chans, size)
        if path.suffix.lower() == ".tar":
            return open_folder(path, data_config, in_chans, n, workers, skip_unreadable)
        raise UserError(
            f"unsupported data file {path}",
            "use an .npz (x, y), a folder or .tar of class folders, a CIFAR batch directory or 'digits'",
        )
    if (path / "batches.meta").is_file() or (path / "meta").is_file() and (path / "train").is_file():
        return _finish_arrays(load_cifar_batches(path, split).head(n), data_config, in_chans, size)
    return open_folder(path, data_config, in_chans, n, workers, skip_unreadable)


def _finish_arrays(
    data: ArrayDataset, config: "DataConfig | None", in_chans: int | None, size: tuple[int, int] | None
) -> ArrayDataset:
    if size is None:  # the old ``size`` resized folders only; arrays were resized by the caller
        data = prepare_arrays(data, config)
    return data.with_channels(in_chans) if in_chans is not None else data


__all__ = ["FolderDataset", "load_dataset", "prepare_arrays"]
