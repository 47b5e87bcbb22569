"""``classes.json``: the class names a dataset keeps beside its files, read strictly.

People write this file by hand or with a script, so a mistake in it (another encoding, a truncated file, a number
where a name belongs) is a one-line error naming the file, what is wrong and the forms that work: never a crash, and
never names silently dropped. The forms:

* a JSON list of names, class id = position: ``["cat", "dog"]``;
* ``{"classes": [...]}``: the same list under a key (as CIFAR exports write it, next to other keys);
* ``{"wnid_to_name": {"n02111889": "Samoyed", ...}}`` (as ImageNet subsets ship it);
* a plain mapping of ids to names: ``{"n02111889": "Samoyed"}`` or ``{"0": "cat", "1": "dog"}``.

In an object with ``classes`` or ``wnid_to_name`` other keys are left alone; a plain mapping is names only.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..models.metadata import MAX_NUM_CLASSES, name_problem, shown

MAX_BYTES = 64 << 20  # ImageNet-21k's names take 1 MB; anything near this limit is not a names file
FORMS = 'write a JSON list of names in class-id order (["cat", "dog"]), or map ids to names ({"0": "cat", "1": "dog"})'
_CLASS_ID = re.compile(r"0|[1-9][0-9]{0,6}")


@dataclass(frozen=True)
class ClassesFile:
    """A checked ``classes.json``: ``names`` by class id (a list form) and/or ``mapping`` from ids to names."""

    path: Path
    names: list[str] | None
    mapping: dict[str, str] | None

    def by_class_id(self) -> list[str]:
        """Names by class id, as an ``.npz`` (labels 0..K-1) uses them: the list, else a mapping of "0".."K-1"."""
        if self.names is not None:
            return self.names
        mapping = self.mapping or {}
        not_ids = [key for key in mapping if not _CLASS_ID.fullmatch(key)]
        if not_ids:
            raise UserError(
                f"{self.path} maps {shown(not_ids[0])} to a name, but the classes of an .npz are numbered 0..K-1", FORMS
            )
        ids = sorted(int(key) for key in mapping)
        missing = next((i for i, found in enumerate(ids) if i != found), None)
        if missing is not None:
            raise UserError(f"{self.path} names class {ids[missing]} but not class {missing}", FORMS)
        return [mapping[str(i)] for i in ids]

    def for_folders(self, folder_ids: list[str], source: str) -> list[str] | None:
        """Names for class folders (sorted ids such as ``n02111889``): by folder name from a mapping (a folder it
        does not name keeps its id; None when it names none of them), or by position from a list of one name per
        folder."""
        if self.mapping is not None:
            if not any(i in self.mapping for i in folder_ids):
                return None
            return [self.mapping.get(i, i) for i in folder_ids]
        names = self.names or []
        if len(names) != len(folder_ids):
            raise UserError(
                f"{self.path} lists {_count(len(names), 'name')} but {source} has "
                f"{_count(len(folder_ids), 'class folder')}",
                'give one name per folder in sorted order, or map folder names to names: {"n02111889": "Samoyed"}',
            )
        return None if names == folder_ids else list(names)


def read_classes_json(path: Path) -> ClassesFile | None:
    """The checked contents of ``path``; None when there is no such file.

    Args:
        path: where a ``classes.json`` may be.
    """
    if not path.is_file():
        return None
    data = _load(path)
    if isinstance(data, list):
        return ClassesFile(path, _names(path, data, "entry"), None)
    if not isinstance(data, dict):
        raise UserError(f"{path} holds {_kind(data)}, not a list of class names nor an object", FORMS)
    names = _names(path, data["classes"], "'classes' entry") if "classes" in data else None
    if "wnid_to_name" in data:
        return ClassesFile(path, names, _mapping(path, data["wnid_to_name"], "'wnid_to_name'"))
    return ClassesFile(path, names, None if names is not None else _mapping(path, data, "the file"))


def _load(path: Path) -> Any:
    """The file's JSON; every way it can fail to be JSON is a one-line error naming the file."""
    try:
        if path.stat().st_size > MAX_BYTES:
            raise UserError(f"{path} is larger than {MAX_BYTES >> 20} MB: not a list of class names", FORMS)
        raw = path.read_bytes()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise UserError(f"cannot read {path} ({reason})", "check the file's permissions") from None
    try:
        text = raw.decode("utf-8-sig")  # a byte-order mark, as some editors write, is fine
    except UnicodeDecodeError as exc:
        raise UserError(
            f"{path} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})", "save it as UTF-8 JSON"
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        cut = ", where the file ends: is it cut short?" if exc.pos >= len(text.rstrip()) else ""
        where = f"at line {exc.lineno} column {exc.colno}{cut}"
        raise UserError(f"{path} is not valid JSON ({exc.msg} {where})", FORMS) from None
    except RecursionError:
        raise UserError(f"{path} is nested too deeply to be a list of class names", FORMS) from None
    except ValueError as exc:  # a number past Python's digit limit
        raise UserError(f"{path} is not valid JSON ({' '.join(str(exc).split())[:100]})", FORMS) from None


def _names(path: Path, value: Any, what: str) -> list[str]:
    """A list of names (``what``: how an entry is named in an error), every one checked."""
    if not isinstance(value, list):
        raise UserError(f"{path}: 'classes' is {_kind(value)}, not a list of names", FORMS)
    if len(value) > MAX_NUM_CLASSES:
        raise UserError(f"{path} lists more than {MAX_NUM_CLASSES:,} names", FORMS)
    for index, name in enumerate(value):
        _check_name(path, name, f"{what} {index}")
    return list(value)


def _mapping(path: Path, value: Any, what: str) -> dict[str, str]:
    """An object of ids to names, every name checked (JSON keys are always strings)."""
    if not isinstance(value, dict):
        raise UserError(f"{path}: {what} is {_kind(value)}, not an object of ids to names", FORMS)
    if len(value) > MAX_NUM_CLASSES:
        raise UserError(f"{path} maps more than {MAX_NUM_CLASSES:,} ids", FORMS)
    for key, name in value.items():
        _check_name(path, name, f"the name of {shown(key, 40)}")
    return dict(value)


def checked_names(items: list[Any], where: str, fix: str) -> list[str]:
    """Class names stored as text or UTF-8 bytes, each checked as a ``classes.json`` name is (``where``: what to say
    they are in an error).

    Args:
        items: the stored names, ``str`` or ``bytes``.
        where: what the error calls the list (a file and key).
        fix: the error's second half: how to store the names instead.
    """
    names = []
    for index, item in enumerate(items):
        try:
            name = item.decode("utf-8") if isinstance(item, bytes) else item
        except UnicodeDecodeError:
            name = None
        problem = name_problem(name) if name is not None else "is not UTF-8 text"
        if problem is not None:
            raise UserError(f"{where} entry {index} ({shown(item, 40)}) {problem}", fix)
        names.append(name)
    return names


def _check_name(path: Path, name: Any, where: str) -> None:
    """A one-line error unless ``name`` can be a class name (see :func:`~hardenctl.models.metadata.name_problem`)."""
    problem = name_problem(name)
    if problem is not None:
        shown_name = shown(name, 40) if isinstance(name, (str, int, float, bool)) or name is None else _kind(name)
        raise UserError(f"{path}: {where} ({shown_name}) {problem}", FORMS)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _kind(value: Any) -> str:
    """What a JSON value is, without printing it (a nested one could be huge)."""
    if isinstance(value, list):
        return f"a list of {_count(len(value), 'item')}"
    if isinstance(value, dict):
        return f"an object with {_count(len(value), 'key')}"
    return shown(value, 40)
