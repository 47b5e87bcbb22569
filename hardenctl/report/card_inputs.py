"""What the model card and the RobustBench entry read from a report, checked first: the evaluation data's readable
name and split, the accuracies, the threat model.

Both outputs are meant for publication, so a data source is named by its last path component, never by the path it
had on the machine that ran the evaluation (``/home/alice/data/cifar-10-batches-py (test)`` is
``cifar-10-batches-py``, split ``test``), and a number that is not an accuracy (NaN, a string, 1.5) is refused
with the field's name rather than printed as ``nan%``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from ..errors import UserError
from .common import clean_text

# the Hub's split names for the words a folder or file name uses for one
SPLIT_WORDS = {
    "train": "train",
    "training": "train",
    "val": "validation",
    "valid": "validation",
    "validation": "validation",
    "dev": "validation",
    "test": "test",
    "testing": "test",
    "eval": "test",
}
DATA_SUFFIXES = (".npz", ".tar")
_HELD_OUT = re.compile(r" \(held-out (\d+)\)$")  # harden's held-out split: "<training data> (held-out 144)"
_LOADER_SPLIT = re.compile(r" \((train|test)\)$")  # CIFAR batches: "<folder> (test)"


@dataclass(frozen=True)
class DataSource:
    """A data source as a card names it. ``name``: readable, no folders above it (``imagenet/val`` when the last
    component is only a split's name); ``stem``: the name to match against known data sets (lower case, no file
    suffix, no split folder); ``split``: the Hub's split name; ``held_out``: images held out from training data."""

    name: str
    stem: str
    split: str
    held_out: int | None = None


def _split_word(name: str) -> str | None:
    """The split a name's last word names: ``digits-test`` → test, ``val`` → validation."""
    return SPLIT_WORDS.get(re.split(r"[-_.]", name.lower())[-1])


def describe_source(source: Any) -> DataSource:
    """The readable name and split of a report's data source (``data.source``, or a harden report's ``data.eval``)."""
    text = clean_text(source if source is not None else "").strip()
    held = _HELD_OUT.search(text)
    text = text[: held.start()] if held else text
    loader = _LOADER_SPLIT.search(text)
    text = text[: loader.start()] if loader else text
    parts = [p for p in PurePosixPath(text.replace("\\", "/")).parts if p not in ("/", ".", "..")]
    if not parts:
        return DataSource("evaluation data", "", "test")
    last = parts[-1]
    stem = last
    for suffix in DATA_SUFFIXES:
        stem = stem.removesuffix(suffix)
    folder_split = SPLIT_WORDS.get(stem.lower()) if len(parts) > 1 else None
    name, stem = (f"{parts[-2]}/{last}", parts[-2]) if folder_split else (last, stem)
    if held:
        split = "validation"
    else:
        split = (loader.group(1) if loader else None) or folder_split or _split_word(stem) or "test"
    return DataSource(name, stem.lower(), split, int(held.group(1)) if held else None)


def checked_accuracy(result: dict[str, Any], key: str, where: str = "") -> float:
    """``result[key]`` as an accuracy in [0, 1]; a UserError naming the field otherwise (NaN is never printed)."""
    value = result.get(key)
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or not math.isfinite(value) or not 0 <= value <= 1:
        raise UserError(
            f"the report's {where}{key} is {clean_text(repr(value))[:60]}, not an accuracy in [0, 1]",
            "pass a report.json written by hardenctl eval or harden (re-run the evaluation)",
        )
    return float(value)


def checked_threat(result: dict[str, Any], where: str = "") -> None:
    """The norm and ε a card states and re-evaluates with: refused with the field's name when they are not ones."""
    if result.get("norm") not in ("linf", "l2"):
        raise UserError(
            f"the report's {where}norm is {clean_text(repr(result.get('norm')))[:60]}, not linf or l2",
            "pass a report.json written by hardenctl eval or harden",
        )
    eps = result.get("eps")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps < 0:
        raise UserError(
            f"the report's {where}eps is {clean_text(repr(eps))[:60]}, not a radius",
            "pass a report.json written by hardenctl eval or harden",
        )
