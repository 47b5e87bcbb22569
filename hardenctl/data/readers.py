"""File lists of class folders and tars through timm's readers, checked before any image is decoded.

timm's readers give every sample's label from its folder name, so labels and class names are
known upfront and a model trained with timm's ``train.py`` on the same folder sees the same class
ids (classes in timm's natural sort order; a class is the folder an image sits in). What timm
leaves silent we refuse loudly: an empty class folder would shift every later class id.
"""

from __future__ import annotations

import os
import posixpath
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from .base import IMAGE_SUFFIXES


def _is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def _hidden(relative: str) -> bool:
    """Tool folders (.git, .ipynb_checkpoints, __MACOSX) that are never meant as classes when empty."""
    return any(part.startswith(".") or part == "__MACOSX" for part in Path(relative).parts)


def _empty_folder_error(where: str, folders: list[str]) -> UserError:
    more = f" (and {len(folders) - 1} more)" if len(folders) > 1 else ""
    return UserError(
        f"class folder {where}{folders[0]} has no images{more}",
        f"remove it or add images ({', '.join(sorted(IMAGE_SUFFIXES))})",
    )


def _check_split_classes(where: str, image_folders: set[str]) -> None:
    """timm names a class by its folder's own name: ``train/cat`` and ``val/cat`` would silently merge into one
    class, which is almost always --data pointing one level above a split."""
    seen: dict[str, str] = {}
    for folder in sorted(image_folders):
        other = seen.setdefault(posixpath.basename(folder), folder)
        if other != folder:
            raise UserError(
                f"{where} has class folder {posixpath.basename(folder)} twice ({other} and {folder})",
                "point --data at one split (e.g. its val/ folder), whose sub-folders are the classes",
            )


def check_folder(root: Path) -> None:
    """Every class folder must hold images, and images must sit in class folders.

    Walks the tree as timm does (every file with an image suffix counts, hidden or not); a class is
    the folder an image sits in, so an empty leaf folder is an empty class.

    Args:
        root: the directory of class folders.
    """
    loose = sorted(f for f in os.listdir(root) if (root / f).is_file() and _is_image(f))
    if loose:
        raise UserError(
            f"{root} holds images outside class folders ({loose[0]})",
            "put each image in a sub-folder named after its class",
        )
    empty, image_folders = [], set()
    for folder, subdirs, files in os.walk(root, followlinks=True):
        has_image = any(_is_image(f) for f in files)
        relative = os.path.relpath(folder, root).replace(os.sep, "/")
        if has_image:
            image_folders.add(relative)
        elif folder != str(root) and not subdirs and not _hidden(relative):
            empty.append(relative)
    if not image_folders:
        raise UserError(
            f"no images found in {root} (expected class sub-folders of .png/.jpg files)", "check the --data path"
        )
    if empty:
        raise _empty_folder_error(f"{root}{os.sep}", sorted(empty))
    _check_split_classes(str(root), image_folders)


def check_tar(path: Path) -> None:
    """The same checks on a tar's member list (headers only, no image is read).

    Args:
        path: the tar of class folders.
    """
    try:
        with tarfile.open(path) as archive:
            members = [
                (posixpath.normpath(m.name).lstrip("/"), m.isdir())
                for m in archive.getmembers()
                if m.isdir() or m.isfile()
            ]
    except (tarfile.TarError, OSError) as exc:
        raise UserError(f"cannot read tar {path} ({exc})", "pass an uncompressed .tar of class folders") from None
    files = [name for name, is_dir in members if not is_dir]
    suffixes = tar_suffixes()  # what timm's tar reader will read, so a tar of .bmp files is refused here, not there

    def is_image(name: str) -> bool:
        return os.path.splitext(name)[1].lower() in suffixes

    images = [name for name in files if is_image(name) or name.lower().endswith(".tar")]  # child tars: timm reads them
    if not images:
        raise UserError(
            f"no images found in {path} (expected class folders of {'/'.join(sorted(suffixes))} files: "
            "what timm reads from tars)",
            "check the --data path",
        )
    loose = [name for name in images if "/" not in name and is_image(name)]  # a tar of tars names classes by child tar
    if loose:
        raise UserError(
            f"{path} holds images outside class folders ({loose[0]})",
            "put each image in a folder named after its class",
        )
    folders = {name for name, is_dir in members if is_dir and name != "."}
    folders |= {posixpath.dirname(name) for name in files if posixpath.dirname(name)}
    filled = {parent for name in images for parent in _parents(name)}
    parents = {parent for folder in folders for parent in _parents(folder + "/x")[:-1]}
    empty = [f for f in folders if f not in filled and f not in parents and not _hidden(f)]
    if empty:
        raise _empty_folder_error(f"{path}:", sorted(empty))
    _check_split_classes(str(path), {posixpath.dirname(name) for name in images if is_image(name)})


def _parents(name: str) -> list[str]:
    parts = name.split("/")[:-1]
    return ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]


def create_reader(path: Path) -> Any:
    """timm's folder reader, or its tar reader, scanning our image suffixes and never writing a cache beside the
    data.

    Args:
        path: a directory or ``.tar`` of class folders (already checked).
    """
    from timm.data.readers.reader_image_folder import ReaderImageFolder

    if path.is_file():
        check_tar(path)
        return _tar_reader(path)
    check_folder(path)
    return ReaderImageFolder(str(path), input_key=";".join(sorted(IMAGE_SUFFIXES)))  # timm lower-cases suffixes


def _tar_reader(path: Path) -> Any:
    """timm's ``ReaderImageInTar`` through its own constructor, never caching tar infos beside the data. It reads
    timm's image suffixes (:func:`tar_suffixes`), which :func:`check_tar` checks against."""
    from timm.data.readers.reader_image_in_tar import ReaderImageInTar

    return ReaderImageInTar(str(path), cache_tarinfo=False)


def tar_suffixes() -> set[str]:
    """The suffixes timm's tar reader takes as images (``.png``, ``.jpg``, ``.jpeg`` unless timm is told otherwise)."""
    from timm.data.readers.img_extensions import get_img_extensions

    return set(get_img_extensions(as_set=True))


def labels_of(reader: Any) -> tuple[np.ndarray, list[str]]:
    """Every sample's label and the class names, from the file list alone.

    Args:
        reader: timm's folder or tar reader.
    """
    if hasattr(reader, "class_to_idx"):  # folder
        targets = np.fromiter((t for _, t in reader.samples), dtype=np.int64, count=len(reader.samples))
        mapping = reader.class_to_idx
    else:  # tar
        targets, mapping = np.asarray(reader.targets, dtype=np.int64), reader.class_name_to_idx
    names = [name for name, _ in sorted(mapping.items(), key=lambda item: item[1])]
    return targets, names


def interleave(targets: np.ndarray) -> np.ndarray:
    """Reader indices in class-interleaved order (1st image of every class, then the 2nd, ...), so every
    prefix ``--n`` is class-balanced instead of all of class 0.

    Args:
        targets: each reader index's class.
    """
    order = np.argsort(targets, kind="stable")  # by class, reader (file name) order within
    sorted_targets = targets[order]
    starts = np.searchsorted(sorted_targets, sorted_targets, side="left")
    rank = np.arange(len(targets)) - starts  # position of each image within its class
    return order[np.lexsort((sorted_targets, rank))]


def filename(reader: Any, index: int) -> str:
    """The file a sample comes from, as the user can find it (``photos.tar:cat/1.jpg`` inside a tar).

    Args:
        reader: timm's folder or tar reader.
        index: the reader's sample index.
    """
    if hasattr(reader, "class_to_idx"):
        return str(reader.filename(index, absolute=True))
    member, _, child = reader.samples[index]
    return f"{reader.root}:{child.name + ':' if child is not None else ''}{member.name}"


def forget_open_tars(reader: Any) -> None:
    """Drop the tar handles timm caches, so a forked worker opens its own instead of sharing a file offset.

    Args:
        reader: timm's folder or tar reader (a folder reader has none).
    """
    state = getattr(reader, "tar_state", None)
    states = list(state.values()) if isinstance(state, dict) else [state] if state is not None else []
    for tar_state in states:
        tar_state.tf = None
        for child in tar_state.children.values():
            child.tf = None
