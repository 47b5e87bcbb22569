"""Data: sources (npz, CIFAR batches, digits in memory; folders and tars streamed) → timm's transforms → DataLoader.

``base`` says what a dataset offers the engines (:class:`Dataset`), ``arrays`` holds the in-memory
sources (:class:`ArrayDataset`; ``ImageDataset`` is its deprecated old name, which in timm means a folder
dataset), ``readers``/``folders`` stream class folders and tars through timm's readers, ``transforms``
builds timm's eval and train transforms from a model's data config, ``loader`` and ``training`` run
them in DataLoader workers, ``load`` picks the source for a ``--data`` spec.
"""

import warnings
from typing import Any

from .arrays import BUILTIN, ArrayDataset, load_cifar_batches, load_digits, load_npz
from .base import IMAGE_SUFFIXES, Dataset
from .folders import FolderDataset
from .load import load_dataset, prepare_arrays
from .loader import default_workers, make_loader
from .training import TrainDataset, sample_seed, seeded
from .transforms import choose_augmentation, eval_transform, train_transform

__all__ = [
    "ArrayDataset",
    "BUILTIN",
    "Dataset",
    "FolderDataset",
    "IMAGE_SUFFIXES",
    "TrainDataset",
    "choose_augmentation",
    "default_workers",
    "eval_transform",
    "load_cifar_batches",
    "load_digits",
    "load_dataset",
    "load_npz",
    "make_loader",
    "prepare_arrays",
    "sample_seed",
    "seeded",
    "train_transform",
]


def __getattr__(name: str) -> Any:
    """``ImageDataset``: the old name of :class:`ArrayDataset` (deprecated: in timm it names the folder dataset)."""
    if name == "ImageDataset":
        warnings.warn(
            "hardenctl.data.ImageDataset is deprecated: use hardenctl.data.ArrayDataset",
            DeprecationWarning,
            stacklevel=2,
        )
        return ArrayDataset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
