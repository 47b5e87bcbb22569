"""What every dataset hands the evaluation and training engines, whatever it is read from.

``evaluate`` and ``harden`` never index pixels directly: they ask for labels upfront, batches in
order and a digest. Writing that down as a Protocol lets in-memory arrays and streamed folders of
photos stand in for each other without sharing a base class.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator, Protocol, Sequence, runtime_checkable

import numpy as np
from torch import Tensor

if TYPE_CHECKING:
    from ..errors import UserError

# Suffixes read as images from folders (case-insensitive); anything else there is ignored.
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"}
Index = Tensor | np.ndarray | Sequence[int]
PIL_MODES = {1: "L", 3: "RGB"}  # the channel counts an image can be decoded to and transformed in


def pil_mode(channels: int, who: str = "the model") -> str:
    """The PIL mode for ``channels``; any other count is the one-line error every data source raises.

    Args:
        channels: 1 (grey, ``L``) or 3 (``RGB``).
        who: what has that many channels, as the error names it.
    """
    if channels not in PIL_MODES:
        from ..errors import UserError

        raise UserError(
            f"{who} has {channels} channels; images can be read and transformed as 1 (grey) or 3 (RGB) only",
            "use a model (and images) with 1 or 3 channels",
        )
    return PIL_MODES[channels]


def describe_unreadable(name: str, exc: BaseException) -> str:
    """``name (Type: message)`` on one line, whatever PIL says: what a worker sends back for an unreadable image.

    Args:
        name: the file, as the user can find it.
        exc: what decoding raised.
    """
    return f"{name} ({' '.join(f'{type(exc).__name__}: {exc}'.split())})"


def unreadable_error(description: str) -> "UserError":
    """The one-line error for an image that cannot be decoded (``description`` from :func:`describe_unreadable`).

    Args:
        description: the file and what went wrong, on one line.
    """
    from ..errors import UserError

    return UserError(
        f"cannot read image {description}", "remove or replace the file, or pass --skip-unreadable to skip such files"
    )


@runtime_checkable
class Dataset(Protocol):
    """A labelled image set served as float [0, 1] NCHW batches.

    ``y`` (every label, LongTensor) and ``class_names`` are known before any pixel is decoded, so a
    caller can check label ranges and size its per-sample results first. ``notes`` says what was done
    to the images (resizing, skipped files) and ends up in the report. ``names_known`` is False when
    ``class_names`` are only label numbers, so they cannot be checked against a model's class names.
    """

    class_names: list[str]
    source: str
    notes: list[str]
    names_known: bool

    def __len__(self) -> int: ...

    @property
    def y(self) -> Tensor: ...

    @property
    def image_size(self) -> tuple[int, int]: ...

    @property
    def channels(self) -> int: ...

    @property
    def num_classes(self) -> int: ...

    def head(self, n: int | None) -> "Dataset":
        """The first ``n`` samples (all when None or larger than the set)."""
        ...

    def take(self, index: Index) -> "Dataset":
        """The samples at ``index`` (positions in this set), in that order: held-out splits, DDP shards."""
        ...

    def with_channels(self, channels: int) -> "Dataset":
        """The same images with ``channels`` channels, as the model expects."""
        ...

    def batches(self, batch_size: int) -> Iterator[tuple[int, Tensor, Tensor]]:
        """``(start, x, y)`` in order; x float [0, 1] (N, C, H, W), y int64."""
        ...

    def pixels(self, start: int, stop: int) -> Tensor:
        """Float [0, 1] images of rows ``start:stop`` (only those are decoded)."""
        ...

    def sha256(self) -> str:
        """Digest of exactly the pixels and labels evaluated (uint8 pixels, int64 labels)."""
        ...


def check_head(n: int | None, length: int) -> bool:
    """True when ``head(n)`` must cut; a count below one is the user's mistake.

    Args:
        n: the images asked for (``--n``); None: all of them.
        length: the images the dataset holds.
    """
    if n is None or n >= length:
        return False
    if n < 1:
        from ..errors import UserError

        raise UserError(f"--n must be at least 1, got {n}", "pass --n 1000")
    return True
