"""Folders and tars of class folders, streamed: decoded batch by batch, never held whole.

Users keep photos of every size, often ImageNet scale; holding them decoded would need tens of GB.
Only the file list and labels live in memory; pixels go through timm's eval transform in
DataLoader workers, one batch at a time, and the digest is computed as they stream.
"""

from __future__ import annotations

import copy
import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
import torch
from torch import Tensor

from ..errors import UserError
from . import readers
from .base import Index, check_head, describe_unreadable, pil_mode, unreadable_error
from .classes_json import read_classes_json
from .loader import make_loader, resolve_workers
from .transforms import eval_transform

if TYPE_CHECKING:
    import PIL.Image

    from ..models.data_config import DataConfig

HEADER_CHECK = 32  # images whose size is read to find a folder's own size when none is declared


def decode(reader: Any, index: int, mode: str) -> "PIL.Image.Image":
    """One image as timm's ImageDataset reads it: PIL, converted to ``mode`` (which decodes the pixels).

    Args:
        reader: timm's folder or tar reader.
        index: the reader's sample index.
        mode: PIL mode to convert to (``RGB`` or ``L``).
    """
    from PIL import Image

    fileobj, _ = reader[index]
    with fileobj, Image.open(fileobj) as image:
        return image.convert(mode)


class _Items(torch.utils.data.Dataset):
    """What DataLoader workers see: position → (uint8 image or None, label, error). Errors travel as text so
    the main process raises one clean UserError instead of a worker traceback."""

    def __init__(self, reader: Any, order: np.ndarray, labels: Tensor, transform: Any, mode: str):
        self.reader, self.order, self.labels, self.transform, self.mode = reader, order, labels, transform, mode

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, position: int) -> tuple[Tensor | None, int, str]:
        index = int(self.order[position])
        try:
            image = decode(self.reader, index, self.mode)
        except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
            return None, int(self.labels[position]), describe_unreadable(readers.filename(self.reader, index), exc)
        pixels = self.transform(image) if self.transform is not None else torch.empty(0, dtype=torch.uint8)
        return pixels, int(self.labels[position]), ""

    def forget_handles(self) -> None:
        readers.forget_open_tars(self.reader)

    def __getstate__(self) -> dict[str, Any]:
        readers.forget_open_tars(self.reader)  # open tar files cannot be pickled (spawned workers)
        return self.__dict__


def _collate(items: list[tuple[Tensor | None, int, str]]) -> tuple[Tensor | None, Tensor, list[str]]:
    errors = [error for _, _, error in items if error]
    labels = torch.tensor([label for _, label, _ in items], dtype=torch.int64)
    return (None if errors else torch.stack([x for x, _, _ in items])), labels, errors


class FolderDataset:
    """A class-folder directory or tar, streamed through timm's eval transform (see :class:`~.base.Dataset`)."""

    def __init__(
        self,
        reader: Any,
        order: np.ndarray,
        labels: Tensor,
        class_names: list[str],
        source: str,
        config: "DataConfig | None",
        mode: str = "RGB",
        workers: int | None = None,
    ):
        """A folder as first opened: nothing skipped or noted yet (:meth:`find_unreadable`, :meth:`resized` and
        :meth:`with_channels` add to ``skipped`` and ``notes`` on their copies).

        Args:
            reader: timm's folder or tar reader; sample ``i`` of the reader is file ``i``.
            order: the reader indices evaluated, in order.
            labels: the class index of each position of ``order``.
            class_names: class id per index (the folder names).
            source: the path, as reports name it.
            config: how images are resized and cropped (None until :func:`open_folder` finds the folder's own size).
            mode: PIL mode the images are decoded to (``RGB`` or ``L``).
            workers: DataLoader processes that decode (0: in this process).
        """
        self.reader, self.order, self._y = reader, np.asarray(order, dtype=np.int64), labels
        self.class_names, self.source, self.config, self.mode = class_names, source, config, mode
        self.workers = workers
        self.notes: list[str] = []  # what was done on the way (resized, converted, unreadable images skipped)
        self.skipped = 0  # unreadable images dropped
        self.names_known = True  # folder names
        self.display_names: list[str] | None = None  # from a classes.json beside the folders (shown; ids match)
        self._digest: str | None = None

    # -- what is known without decoding -------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.order)

    @property
    def y(self) -> Tensor:
        return self._y

    @property
    def image_size(self) -> tuple[int, int]:
        assert self.config is not None and self.config.input_size is not None, "open_folder sets the size"
        return int(self.config.input_size[0]), int(self.config.input_size[1])

    @property
    def channels(self) -> int:
        return 1 if self.mode == "L" else 3

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def filenames(self) -> list[str]:
        """The file behind each sample, in order (per-sample results name their source by it)."""
        return [readers.filename(self.reader, int(i)) for i in self.order]

    def _copy(self, **changes: Any) -> "FolderDataset":
        data = copy.copy(self)
        data.notes, data._digest = list(self.notes), None
        for key, value in changes.items():
            setattr(data, key, value)
        return data

    def head(self, n: int | None) -> "FolderDataset":
        if not check_head(n, len(self)):
            return self
        return self._copy(order=self.order[:n], _y=self._y[:n])

    def take(self, index: Index) -> "FolderDataset":
        index = torch.as_tensor(index, dtype=torch.long)
        return self._copy(order=self.order[index.numpy()], _y=self._y[index])

    def with_channels(self, channels: int) -> "FolderDataset":
        """Decode as grey (``L``) or RGB, as timm's ``input_img_mode`` does."""
        if channels == self.channels:
            return self
        data = self._copy(mode=pil_mode(channels))
        data.notes.append(f"images converted to {data.mode}")
        return data

    def resized(self, size: tuple[int, int]) -> "FolderDataset":
        """Squash every image to ``size`` (bilinear, no crop): the old ``--resize`` behaviour."""
        if tuple(size) == self.image_size:
            return self
        data = self._copy(config=squash_config(size))
        data.notes.append(f"resized to {size[0]}x{size[1]} (bilinear, no crop)")
        return data

    # -- pixels ------------------------------------------------------------------------------------------
    def _items(self, with_pixels: bool = True) -> _Items:
        transform = eval_transform(self.config, self.channels, torch.uint8) if with_pixels else None
        return _Items(self.reader, self.order, self._y, transform, self.mode)

    def _stream(
        self, start: int, stop: int, batch_size: int, workers: int | None
    ) -> Iterator[tuple[int, Tensor, Tensor]]:
        """uint8 batches of positions ``start:stop``, in order."""
        loader = make_loader(
            self._items(), batch_size, positions=range(start, stop), workers=workers, collate_fn=_collate, device="cpu"
        )  # not pinned: batches become float here, in this process
        position = start
        for x, y, errors in loader:
            if errors:
                raise unreadable_error(errors[0])
            yield position, x, y
            position += len(y)

    def batches(self, batch_size: int) -> Iterator[tuple[int, Tensor, Tensor]]:
        """Float [0, 1] batches in order; a complete pass also fills :meth:`sha256`."""
        digest = self._new_digest()
        for start, x, y in self._stream(0, len(self), batch_size, self.workers):
            digest.update(x.contiguous().numpy())
            yield start, x.float().div_(255), y
        self._digest = self._finish_digest(digest)

    def pixels(self, start: int, stop: int) -> Tensor:
        stop = min(stop, len(self))
        if stop <= start:
            return torch.empty(0, self.channels, *self.image_size)
        workers = 0 if stop - start <= 32 else self.workers  # a probe decodes faster than workers start
        return torch.cat([x for _, x, _ in self._stream(start, stop, 32, workers)]).float().div_(255)

    def image(self, position: int) -> "PIL.Image.Image":
        """Sample ``position`` decoded (before any transform): what training transforms take."""
        index = int(self.order[position])
        try:
            return decode(self.reader, index, self.mode)
        except Exception as exc:
            raise unreadable_error(describe_unreadable(readers.filename(self.reader, index), exc)) from None

    def _new_digest(self) -> Any:
        digest = hashlib.sha256()  # same layout as ArrayDataset.sha256, so equal pixels give equal digests
        digest.update(str(torch.uint8).encode() + str((len(self), self.channels, *self.image_size)).encode())
        return digest

    def _finish_digest(self, digest: Any) -> str:
        digest.update(self._y.to(torch.int64).contiguous().numpy().tobytes())
        return digest.hexdigest()

    def sha256(self) -> str:
        """Digest of the evaluated uint8 pixels and labels; streams a pass of its own if none has completed."""
        if self._digest is None:
            digest = self._new_digest()
            for _, x, _ in self._stream(0, len(self), 64, self.workers):
                digest.update(x.contiguous().numpy())
            self._digest = self._finish_digest(digest)
        return self._digest

    def fingerprint(self) -> str:
        """Identifies the samples without decoding them (files, labels, sizes on disk, the data config): what a
        training run keys its resume on, where hashing every pixel would cost an epoch of decoding."""
        digest = hashlib.sha256(repr((self.source, self.mode, self.config.to_dict() if self.config else None)).encode())
        for name, label in zip(self.filenames, self._y.tolist()):
            size = os.path.getsize(name) if os.path.isfile(name) else -1
            digest.update(f"{name}\0{label}\0{size}\n".encode())
        return digest.hexdigest()

    def find_unreadable(self, n: int | None) -> "FolderDataset":
        """Drop unreadable images (decoding each once, in workers) until ``n`` readable ones are found; the
        count goes to ``skipped`` and ``notes``. Labels must be known before evaluation, so this is a pass of its
        own."""
        wanted = len(self) if n is None else min(n, len(self))
        keep: list[int] = []
        bad: list[str] = []
        scanned = 0
        items = self._items(with_pixels=False)
        while len(keep) < wanted and scanned < len(self):
            stop = min(len(self), scanned + wanted - len(keep))
            loader = make_loader(
                items,
                16,
                positions=range(scanned, stop),
                workers=self.workers,
                collate_fn=_collate_errors,
                device="cpu",
            )
            for errors in loader:
                for offset, error in enumerate(errors):
                    (bad.append(error) if error else keep.append(scanned + offset))
                scanned += len(errors)
        data = self.take(keep)
        data.skipped = self.skipped + len(bad)
        if bad:
            data.notes.append(f"skipped {len(bad)} unreadable image{'s' if len(bad) > 1 else ''} (first: {bad[0]})")
        return data


def _collate_errors(items: list[tuple[Tensor | None, int, str]]) -> list[str]:
    return [error for _, _, error in items]


def squash_config(size: tuple[int, int]) -> "DataConfig":
    """Resize straight to ``size`` with bilinear interpolation, nothing cropped.

    Args:
        size: (H, W) the images are resized to.
    """
    from ..models.data_config import DataConfig

    return DataConfig(
        input_size=(int(size[0]), int(size[1])),
        interpolation="bilinear",
        crop_pct=1.0,
        crop_mode="squash",
        sources={"input_size": "--resize"},
    )


def own_size_config(reader: Any, order: np.ndarray, source: str, config: "DataConfig | None") -> "DataConfig":
    """With no size declared, a folder whose first images share one size is used at that size (the rest of
    ``config``, if any, kept: every photo still goes through the eval transform, as timm's validate.py does).

    Args:
        reader: timm's folder or tar reader.
        order: the reader indices evaluated; the sizes of the first :data:`HEADER_CHECK` are read.
        source: the folder's path, as errors name it.
        config: the model's data config, if any (its crop, interpolation and default size are kept).
    """
    from dataclasses import replace

    from PIL import Image

    from ..models.data_config import DataConfig

    sizes: dict[tuple[int, int], str] = {}  # size → the first file of that size
    for index in order[:HEADER_CHECK]:
        fileobj, _ = reader[int(index)]
        try:
            with fileobj, Image.open(fileobj) as image:  # reads the header only
                sizes.setdefault((image.height, image.width), readers.filename(reader, int(index)))
        except Exception as exc:
            raise unreadable_error(describe_unreadable(readers.filename(reader, int(index)), exc)) from None
    if not sizes:
        raise UserError(f"no readable images in {source}", "check the --data path")
    if len(sizes) > 1 and config is not None and config.default_input_size is not None:
        # photos of many sizes and nothing declared: the architecture's own input size, named as the source
        return replace(
            config,
            input_size=tuple(config.default_input_size),
            sources={**config.sources, "input_size": config.default_source},
        )
    if len(sizes) > 1:
        shown = ", ".join(f"{h}x{w} ({Path(file).name})" for (h, w), file in list(sizes.items())[:3])
        raise UserError(
            f"images in {source} have different sizes ({shown}, ...)",
            "pass --input-size H,W (with --resize) to say the size the model takes; "
            "they are resized and centre-cropped to it",
        )
    (size,) = sizes
    if config is None:
        return DataConfig(input_size=size, sources={"input_size": "data"})
    return replace(config, input_size=size, sources={**config.sources, "input_size": "data"})


def display_names(path: Path, folder_ids: list[str]) -> list[str] | None:
    """People's names for folder ids such as ``n02111889`` ("Samoyed"), from a ``classes.json`` in the folder or beside
    it (the first found): ``{"wnid_to_name": {id: name}}`` (as ImageNet subsets ship it), a plain ``{id: name}``, or a
    list of one name per folder in sorted order. Shown in reports; the ids stay the class names that models and
    baselines are matched on. None when there is no such file or it names none of the folders; a file that is not
    one of these forms is a one-line error (see :mod:`.classes_json`).

    Args:
        path: the class-folder directory or tar.
        folder_ids: the class folders' names, in class-index order.
    """
    for candidate in (path / "classes.json", path.parent / "classes.json"):
        found = read_classes_json(candidate)
        if found is not None:
            return found.for_folders(folder_ids, str(path))
    return None


def open_folder(
    path: Path,
    config: "DataConfig | None",
    in_chans: int | None,
    n: int | None,
    workers: int | None,
    skip_unreadable: bool,
) -> FolderDataset:
    """A class-folder directory or ``.tar`` as a :class:`FolderDataset`; only the first ``n`` images are ever read.

    Args:
        path: the directory or tar of class folders.
        config: how images are resized and cropped; None (or no input size): the folder's own size.
        in_chans: 1 decodes grey, 3 (or None) RGB.
        n: keep only the first ``n`` images of the class-interleaved order (None: all).
        workers: DataLoader processes that decode (None: this process's share of the cores, 0: in-process).
        skip_unreadable: drop images that cannot be decoded (counted in ``skipped``) instead of refusing them.
    """
    mode = pil_mode(in_chans or 3)
    reader = readers.create_reader(path)
    targets, class_names = readers.labels_of(reader)
    order = readers.interleave(targets)
    data = FolderDataset(
        reader, order, torch.from_numpy(targets[order]), class_names, str(path), config, mode, resolve_workers(workers)
    )
    data.display_names = display_names(path, class_names)
    data = data.find_unreadable(n) if skip_unreadable else data.head(n)
    if config is None or config.input_size is None:
        data.config = own_size_config(data.reader, data.order, data.source, config)
    data.notes.append(eval_transform(data.config, data.channels).description)
    return data
