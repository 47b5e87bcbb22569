"""In-memory datasets: npz, CIFAR python batches, built-in ``digits``.

These sources are small enough (CIFAR: 30 MB) to hold whole. Images are kept as stored (uint8 when
possible) and turned into float [0, 1] batches one batch at a time, so memory grows with the
dataset, never with the attacks. Folders of photos stream instead (``folders.py``).
"""

from __future__ import annotations

import hashlib
import io
import pickle
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import UserError
from .base import Index, check_head, pil_mode
from .classes_json import checked_names, read_classes_json

if TYPE_CHECKING:
    import PIL.Image

BUILTIN = ("digits", "digits-train", "digits-test")


@dataclass
class ArrayDataset:
    """Images ``x`` (N, C, H, W; uint8 0..255 or float 0..1) and labels ``y`` (N,)."""

    x: Tensor
    y: Tensor
    class_names: list[str]
    source: str
    notes: list[str] = field(default_factory=list)
    names_known: bool = False  # class_names came with the data (CIFAR meta, npz, classes.json), not made from labels

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.x.shape[-2]), int(self.x.shape[-1])

    @property
    def channels(self) -> int:
        return int(self.x.shape[1])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def head(self, n: int | None) -> "ArrayDataset":
        """The first ``n`` samples (all when ``n`` is None or larger than the set)."""
        if not check_head(n, len(self)):
            return self
        return replace(self, x=self.x[:n], y=self.y[:n], notes=list(self.notes))

    def take(self, index: Index) -> "ArrayDataset":
        index = torch.as_tensor(index, dtype=torch.long)
        return replace(self, x=self.x[index], y=self.y[index], notes=list(self.notes))

    def pixels(self, start: int, stop: int) -> Tensor:
        """Float [0, 1] images of rows ``start:stop``."""
        chunk = self.x[start:stop]
        return chunk.float().div_(255.0) if chunk.dtype == torch.uint8 else chunk.float()

    def batches(self, batch_size: int) -> Iterator[tuple[int, Tensor, Tensor]]:
        """``(start, x, y)`` in order, x as float [0, 1]."""
        for start in range(0, len(self), batch_size):
            stop = min(start + batch_size, len(self))
            yield start, self.pixels(start, stop), self.y[start:stop]

    def sha256(self) -> str:
        """Digest of exactly the pixels and labels evaluated (after --n and --resize)."""
        digest = hashlib.sha256()
        digest.update(str(self.x.dtype).encode() + str(tuple(self.x.shape)).encode())
        digest.update(self.x.contiguous().numpy().tobytes())
        digest.update(self.y.to(torch.int64).contiguous().numpy().tobytes())
        return digest.hexdigest()

    def resized(self, size: tuple[int, int]) -> "ArrayDataset":
        """Bilinear (antialiased) resize to ``size``; dtype kept."""
        if self.image_size == tuple(size):
            return self
        out = []
        for start in range(0, len(self), 256):
            chunk = self.pixels(start, start + 256)
            chunk = F.interpolate(chunk, size=tuple(size), mode="bilinear", antialias=True, align_corners=False).clamp_(
                0, 1
            )
            out.append(chunk.mul(255).round_().to(torch.uint8) if self.x.dtype == torch.uint8 else chunk)
        notes = self.notes + [f"resized from {self.image_size[0]}x{self.image_size[1]} to {size[0]}x{size[1]}"]
        return replace(self, x=torch.cat(out), notes=notes)

    def image(self, index: int) -> "PIL.Image.Image":
        """Row ``index`` as a PIL image (mode L or RGB), what timm's transforms take.

        Float rows are quantised to uint8: PIL has no float RGB mode.
        """
        from PIL import Image

        row = self.x[index]
        if row.dtype != torch.uint8:
            row = row.float().mul(255).round_().clamp_(0, 255).to(torch.uint8)
        mode = pil_mode(row.shape[0], self.source)
        array = row.permute(1, 2, 0).numpy()
        return (
            Image.fromarray(array[..., 0], mode) if mode == "L" else Image.fromarray(np.ascontiguousarray(array), mode)
        )

    def transformed(self, transform: Callable[[Any], Tensor], note: str) -> "ArrayDataset":
        """Every image through ``transform`` (PIL in, uint8 CHW out): arrays prepared exactly as folders are."""
        if len(self) == 0:
            return self
        notes = (
            self.notes
            + ([] if self.x.dtype == torch.uint8 else ["float images quantised to uint8 for resizing"])
            + [note]
        )
        x = torch.stack([transform(self.image(i)) for i in range(len(self))])
        return replace(self, x=x, notes=notes)

    def with_channels(self, channels: int) -> "ArrayDataset":
        """Repeat a grey channel to match an RGB model; any other mismatch is an error."""
        if channels == self.channels:
            return self
        if self.channels == 1:
            notes = self.notes + [f"grey images repeated to {channels} channels"]
            return replace(self, x=self.x.repeat(1, channels, 1, 1), notes=notes)
        raise UserError(
            f"the data has {self.channels} channels but the model expects {channels}", "use data that matches the model"
        )


def _finish(
    x: np.ndarray,
    y: np.ndarray,
    class_names: list[str] | None,
    source: str,
    names_known: bool | None = None,
    names_from: str | None = None,
) -> ArrayDataset:
    """Validate arrays and convert to an NCHW dataset (``names_from``: the file the names came from, for errors)."""
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise UserError(
            f"{source}: images must be (N, H, W, C) or (N, H, W), got shape {x.shape}", "save x as N×H×W×C uint8"
        )
    if x.shape[-1] not in (1, 3) and x.shape[1] in (1, 3):
        x = np.moveaxis(x, 1, -1)  # accept NCHW too
    y = np.asarray(y)
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise UserError(
            f"{source}: {x.shape[0]} images but labels have shape {y.shape}", "give one integer label per image"
        )
    if not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        else:
            raise UserError(f"{source}: labels must be integers, got {y.dtype}", "store y as int64 class ids")
    if y.size and y.min() < 0:
        raise UserError(f"{source}: negative label {int(y.min())}", "labels must be class ids 0..K-1")
    if x.dtype == np.uint8:
        tensor = torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 1)))
    elif np.issubdtype(x.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(x)))
        if bad:
            raise UserError(
                f"{source}: images contain {bad} NaN/inf values", "clean the data (replace or drop those images)"
            )
        if x.size and (x.min() < 0 or x.max() > 1):
            raise UserError(
                f"{source}: float images must lie in [0, 1], found [{x.min():.3g}, {x.max():.3g}]",
                "store uint8 0..255 or floats in [0, 1]",
            )
        tensor = torch.from_numpy(np.ascontiguousarray(np.moveaxis(x.astype(np.float32), -1, 1)))
    else:
        raise UserError(f"{source}: unsupported image dtype {x.dtype}", "store x as uint8 (0..255) or float (0..1)")
    num_classes = int(y.max()) + 1 if y.size else 0
    names_known = class_names is not None if names_known is None else names_known
    if class_names is None:
        class_names = [str(i) for i in range(num_classes)]
    elif len(class_names) < num_classes:
        where = f" (from {names_from})" if names_from and names_from != source else ""
        raise UserError(
            f"{source}: label {num_classes - 1} but only {len(class_names)} class names{where}",
            "fix the labels or the class list",
        )
    return ArrayDataset(
        tensor, torch.from_numpy(y.astype(np.int64)), list(class_names), source, names_known=names_known
    )


# ---------------------------------------------------------------------------------------------
def load_digits(split: str = "all") -> ArrayDataset:
    """scikit-learn's 1797 real 8×8 handwritten digits (0..16 grey levels → uint8).

    ``digits-train``/``digits-test`` are a fixed 80/20 split of a seeded permutation,
    so a model can be trained on one and evaluated on the other.

    Args:
        split: ``all`` (1797 images), ``train`` (the first 80 % of the permutation) or ``test`` (the rest).
    """
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    x = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    y = bunch.target.astype(np.int64)
    if split != "all":
        order = np.random.default_rng(0).permutation(len(y))
        cut = int(round(0.8 * len(y)))
        order = order[:cut] if split == "train" else order[cut:]
        x, y = x[order], y[order]
    name = "digits" if split == "all" else f"digits-{split}"
    return _finish(x, y, [str(i) for i in range(10)], name, names_known=False)  # the names are just the labels


def _class_names_near(path: Path) -> tuple[list[str], str] | tuple[None, None]:
    """(names by class id, the file) from a ``classes.json`` beside the ``.npz``; (None, None) without one."""
    found = read_classes_json(path.parent / "classes.json")
    return (found.by_class_id(), str(found.path)) if found is not None else (None, None)


def _stored_names(archive: Any, path: Path) -> list[str] | None:
    """The archive's own ``class_names`` (text, or UTF-8 bytes), checked like a ``classes.json``'s names."""
    if "class_names" not in archive.files:
        return None
    stored = archive["class_names"]
    if stored.ndim != 1:
        raise UserError(
            f"{path}: class_names has shape {stored.shape}, not one name per class",
            "save class_names=np.array(['cat', 'dog', ...])",
        )
    items = [item if isinstance(item, (bytes, str)) else str(item) for item in stored.tolist()]  # numbers name too
    return checked_names(items, f"{path}: class_names", "save class_names=np.array(['cat', 'dog', ...])")


def load_npz(path: Path) -> ArrayDataset:
    """An ``.npz`` of images ``x`` (N×H×W×C, N×H×W or N×C×H×W; uint8 or [0, 1] floats) and labels ``y``, read
    without unpickling anything; class names from its ``class_names`` array or a ``classes.json`` beside it.

    Args:
        path: the ``.npz`` file.
    """
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "x" not in archive.files or "y" not in archive.files:
                raise UserError(
                    f"{path} has arrays {archive.files}, not 'x' and 'y'",
                    "save with np.savez(path, x=images, y=labels)",
                )
            x, y = archive["x"], archive["y"]
            names = _stored_names(archive, path)
    except UserError:
        raise
    except ValueError as exc:
        raise UserError(
            f"{path} stores pickled objects ({exc})", "save plain arrays: np.savez(path, x=uint8_images, y=int_labels)"
        ) from None
    except Exception as exc:
        raise UserError(
            f"cannot read {path} ({type(exc).__name__}: {exc})", "the file is corrupt or not an .npz archive"
        ) from None
    names_from = str(path) if names else None
    if not names:
        names, names_from = _class_names_near(path)
    return _finish(x, y, names, str(path), names_from=names_from)


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle asked for a global outside the allowed ones; ``name`` says which (``module.name``)."""

    def __init__(self, name: str):
        super().__init__(f"refusing to load {name}")
        self.name = name


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """CIFAR's python batches are pickles; allow numpy arrays and builtins, nothing that runs code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        text = f"{module}.{name}"
        raise RefusedGlobal((text if text.isprintable() else ascii(text)[1:-1])[:80])


def _read_cifar_pickle(path: Path, keys: tuple[bytes, ...]) -> dict:
    """A CIFAR python batch (a pickled dict holding ``keys``), read without running code."""
    fix = (
        "use the original python-version CIFAR files, or save the images as an .npz: "
        "np.savez(path, x=uint8_images, y=labels)"
    )
    try:
        batch = _ArrayOnlyUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except RefusedGlobal as exc:
        raise UserError(
            f"refusing to load CIFAR batch {path}: it would import {exc.name}, and hardenctl will not "
            "unpickle code (it could run anything)",
            fix,
        ) from None
    except Exception as exc:
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:160]
        raise UserError(f"cannot read CIFAR batch {path} ({reason})", fix) from None
    missing = [key.decode() for key in keys if not isinstance(batch, dict) or key not in batch]
    if missing:
        raise UserError(f"CIFAR batch {path} has no {', '.join(missing)}", fix)
    return batch


def _cifar_rows(batch: dict, label_key: bytes, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(N×32×32×3 uint8 images, labels) of one batch; any other shape is a one-line error."""
    try:
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[label_key], dtype=np.int64)
        if data.ndim != 2 or data.shape[1] != 3072 or labels.shape != (data.shape[0],):
            raise ValueError(f"data {data.shape}, labels {labels.shape}")
    except (TypeError, ValueError, OverflowError) as exc:
        raise UserError(
            f"CIFAR batch {path} is not N rows of 3072 pixels with one label each ({str(exc)[:80]})",
            "use the original python-version CIFAR files",
        ) from None
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def _cifar_names(meta: Path, names_key: bytes) -> list[str]:
    """Class names from ``batches.meta``/``meta``: UTF-8 byte strings, checked like any class name."""
    stored = _read_cifar_pickle(meta, (names_key,))[names_key]
    if not isinstance(stored, (list, tuple)):
        raise UserError(
            f"{meta}: {names_key.decode()} is not a list of names", "use the original python-version CIFAR files"
        )
    return checked_names(list(stored), f"{meta}: {names_key.decode()}", "use the original python-version CIFAR files")


def load_cifar_batches(directory: Path, split: str) -> ArrayDataset:
    """CIFAR-10 (``data_batch_1..5``/``test_batch``) or CIFAR-100 (``train``/``test``) python batches.

    Args:
        directory: the extracted ``cifar-10-batches-py`` or ``cifar-100-python`` directory.
        split: ``train`` or ``test``.
    """
    if (directory / "batches.meta").is_file():
        files = ["test_batch"] if split == "test" else [f"data_batch_{i}" for i in range(1, 6)]
        meta, label_key, names_key = directory / "batches.meta", b"labels", b"label_names"
    else:
        files, meta, label_key, names_key = [split], directory / "meta", b"fine_labels", b"fine_label_names"
    xs, ys = [], []
    for name in files:
        if not (directory / name).is_file():
            raise UserError(
                f"CIFAR directory {directory} has no {name}",
                "point --data at the extracted cifar-*-batches-py directory",
            )
        batch = _read_cifar_pickle(directory / name, (b"data", label_key))
        images, labels = _cifar_rows(batch, label_key, directory / name)
        xs.append(images)
        ys.append(labels)
    names = _cifar_names(meta, names_key) if meta.is_file() else None
    return _finish(np.concatenate(xs), np.concatenate(ys), names, f"{directory} ({split})")
