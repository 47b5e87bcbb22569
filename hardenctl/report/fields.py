"""Field checks for a report read back from disk: each field's type and range, named by its path in the file.

A report is data from anywhere (a CI artefact, a colleague's upload, a file edited by hand), so every field a command
reads is checked before it is used, and a wrong one is a one-line :class:`~hardenctl.errors.UserError` such as
``old.json: robust_accuracy is "abc", not a number in [0, 1]``, never a TypeError three calls later or ``nan%`` in
a model card. :mod:`hardenctl.report.reader` applies these checks; the per-sample reader
(:mod:`hardenctl.evaluation.samples`) uses the same kinds and the same way of showing a value.

A kind is a test and the words that say what the value must be; :func:`maybe` lets null through as well.
"""

from __future__ import annotations

import json
import math
from typing import Any, Callable, NoReturn

from ..errors import UserError
from .common import clean_text

REPORT_FIX = (
    "pass a report.json written by `hardenctl eval --report` or `hardenctl harden --out` (re-run it if the "
    "file was edited)"
)
# no number a report holds comes near these: anything larger is damage, and would overflow a float on the way to a table
LARGEST_NUMBER = 1e15
LARGEST_INTEGER = 2**63
LONGEST_TEXT = 10_000  # names, paths, hashes, details: a longer string is damage and would flood a table or a card
SHOWN_CHARS = 40  # of a wrong value, in the error line

Kind = tuple[Callable[[Any], bool], str]


class NonFinite:
    """What the JSON parser makes of ``NaN``, ``Infinity`` and ``-Infinity`` (Python writes them; JSON has no such
    numbers): a marker no kind accepts, so the error can name the field it sits in."""

    __slots__ = ("token",)

    def __init__(self, token: str):
        self.token = token

    def __repr__(self) -> str:
        return self.token


def is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) < LARGEST_INTEGER


def is_number(value: Any) -> bool:
    """A finite JSON number of a size a report can hold (true and false are not numbers, though a bool is an int)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return abs(value) <= LARGEST_NUMBER and (isinstance(value, int) or math.isfinite(value))


def is_text(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= LONGEST_TEXT


def number_in(low: float | None = None, high: float | None = None, words: str | None = None) -> Kind:
    """A finite number in [low, high] (either end open when None)."""

    def test(value: Any) -> bool:
        return is_number(value) and (low is None or value >= low) and (high is None or value <= high)

    if words is None:
        words = (
            f"a number in [{low:g}, {high:g}]"
            if low is not None and high is not None
            else f"a number >= {low:g}"
            if low is not None
            else "a number"
        )
    return test, words


def integer_in(low: int | None = None, high: int | None = None) -> Kind:
    """A whole number in [low, high]: 60.0 is refused, as hardenctl never writes a count as a float."""

    def test(value: Any) -> bool:
        return is_integer(value) and (low is None or value >= low) and (high is None or value <= high)

    words = (
        f"a whole number in [{low}, {high}]"
        if low is not None and high is not None
        else f"a whole number >= {low}"
        if low is not None
        else "a whole number"
    )
    return test, words


def one_of(*choices: str) -> Kind:
    return (lambda value: isinstance(value, str) and value in choices), " or ".join(json.dumps(c) for c in choices)


def maybe(kind: Kind) -> Kind:
    """``kind`` or null."""
    test, words = kind
    return (lambda value: value is None or test(value)), f"{words} or null"


def list_of(kind: Kind, words: str) -> Kind:
    """A list whose every item is of ``kind``; ``words`` says what the items are, in the plural."""
    test = kind[0]
    return (lambda value: isinstance(value, list) and all(test(item) for item in value)), f"a list of {words}"


def _interval(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(ACCURACY[0](v) for v in value) and value[0] <= value[1]


ACCURACY = number_in(0, 1)
TEXT: Kind = (is_text, f"a string (at most {LONGEST_TEXT:,} characters)")
FLAG: Kind = ((lambda value: isinstance(value, bool)), "true or false")
INTERVAL: Kind = (_interval, "a pair [low, high] of numbers in [0, 1] with low <= high")
OBJECT: Kind = ((lambda value: isinstance(value, dict)), "an object")
NAMES = list_of(TEXT, "strings")


def shown(value: Any) -> str:
    """A wrong value as the error line shows it: JSON as written, cut to a few characters, always one line."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, NonFinite):
        return value.token
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= LARGEST_INTEGER:
        return "a number with more digits than any report holds"
    text = json.dumps(value[: SHOWN_CHARS + 1] if isinstance(value, str) else value)
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 1] + "…"


def key_text(key: Any) -> str:
    """A key from the file as part of a field's path: printable, short."""
    text = clean_text(key)
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 1] + "…"


class Fields:
    """One object of a report (the report, a class's entry, a check, ...) and the file it came from; every check names
    the field by its path (``hardened.per_class.3.n``) and says what it must be."""

    def __init__(self, data: dict[str, Any], file: str, where: str = "", fix: str = REPORT_FIX):
        self.data, self.file, self.where, self.fix = data, file, where, fix

    def path(self, key: Any) -> str:
        return f"{self.where}{key_text(key)}"

    def fail(self, key: Any, value: Any, words: str) -> NoReturn:
        raise UserError(f"{self.file}: {self.path(key)} is {shown(value)}, not {words}", self.fix)

    def refuse(self, problem: str) -> NoReturn:
        """A problem with this object as a whole (``problem`` names its fields)."""
        raise UserError(f"{self.file}: {problem}", self.fix)

    def get(self, key: str, kind: Kind, required: bool = False) -> Any:
        """The value of ``key`` when it is of ``kind``; None when it is absent and not ``required``."""
        if key not in self.data:
            if required:
                raise UserError(f"{self.file}: {self.path(key)} is missing (hardenctl always writes it)", self.fix)
            return None
        value = self.data[key]
        test, words = kind
        if not test(value):
            self.fail(key, value, words)
        return value

    def child(self, key: str, required: bool = False) -> Fields | None:
        """The object at ``key`` as Fields of its own; None when it is absent (or null, unless ``required``)."""
        value = self.get(key, OBJECT if required else maybe(OBJECT), required)
        return None if value is None else Fields(value, self.file, f"{self.path(key)}.", self.fix)

    def entries(self, key: str, what: str) -> list[tuple[str, Fields]]:
        """Each (key, object) of the mapping at ``key``: ``what`` says what each value is, for the error."""
        mapping = self.get(key, (OBJECT[0], f"an object of {what}"))
        items = []
        for name, value in (mapping or {}).items():
            if not isinstance(value, dict):
                Fields(mapping, self.file, f"{self.path(key)}.", self.fix).fail(name, value, f"an object ({what})")
            items.append((name, Fields(value, self.file, f"{self.path(key)}.{key_text(name)}.", self.fix)))
        return items

    def items(self, key: str, what: str) -> list[Fields]:
        """Each object of the list at ``key`` (``what``: what each one is)."""
        values = self.get(key, ((lambda v: isinstance(v, list)), f"a list of {what}"))
        items = []
        for index, value in enumerate(values or []):
            where = f"{self.path(key)}[{index}]"
            if not isinstance(value, dict):
                raise UserError(f"{self.file}: {where} is {shown(value)}, not an object ({what})", self.fix)
            items.append(Fields(value, self.file, f"{where}.", self.fix))
        return items

    def values_of(self, key: str, kind: Kind, what: str) -> dict[str, Any]:
        """The mapping at ``key`` whose every value is of ``kind`` (``what``: what the keys are)."""
        mapping = self.get(key, (OBJECT[0], f"an object of {what} to {kind[1]}")) or {}
        inner = Fields(mapping, self.file, f"{self.path(key)}.", self.fix)
        for name in mapping:
            inner.get(name, kind)
        return mapping


__all__ = [
    "ACCURACY",
    "FLAG",
    "Fields",
    "INTERVAL",
    "Kind",
    "NAMES",
    "NonFinite",
    "OBJECT",
    "REPORT_FIX",
    "TEXT",
    "integer_in",
    "is_integer",
    "is_number",
    "is_text",
    "list_of",
    "maybe",
    "number_in",
    "one_of",
    "shown",
]
