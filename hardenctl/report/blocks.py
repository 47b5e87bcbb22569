"""The document's blocks: what a report or a comparison says, as literal text that each renderer spells in its own
syntax (Markdown, HTML).

Every piece of text here is literal (a class name, a path, a template word alike): the Markdown renderer escapes it
for Markdown, the HTML renderer for HTML. Building the content once keeps the two outputs' tables the same, row for
row, and means neither renderer parses the other's output (a name with ``|`` or ``**`` in it cannot change either).
The content modules (:mod:`.document`, :mod:`.verdict`, :mod:`.sequential_section`, :mod:`.paired_section`,
:mod:`.comparison`) build lists of these; no renderer is imported by them, and no renderer imports another.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union


@dataclass(frozen=True)
class Span:
    """Literal text; ``style`` is "", "bold" or "code"."""

    text: str
    style: str = ""


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Paragraph:
    spans: tuple[Span, ...]


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[tuple[Span, ...], ...], ...]  # row → cell → spans
    numeric: tuple[int, ...] = ()  # columns of numbers: a renderer that wraps text must never break these
    names: tuple[int, ...] = ()  # columns of our own names (checks, gates, attacks): whole where there is room


@dataclass(frozen=True)
class Verdict:
    """The answer first: pass, fail or no gate set, why, and the numbers it rests on (a reader on a phone or in a
    GitHub step summary should not have to scroll to a table at the end to learn whether the model passed)."""

    outcome: str  # "pass", "fail" or "none" (no gate was set: nothing to pass or fail)
    label: str  # "PASS", "FAIL", "NO GATES SET"
    summary: str  # e.g. "2 of 3 gates failed"
    details: tuple[str, ...]  # one line per gate that decided it (or a note)
    figures: tuple[tuple[str, str], ...]  # (label, value): the key numbers


@dataclass(frozen=True)
class Image:
    alt: str
    target: str  # "plot" or "pictures": each renderer knows where its copy of the image is


Block = Union[Heading, Paragraph, Table, Image, Verdict]


def bold(text: object) -> Span:
    """Text shown in bold (a failed gate, a fall).

    Args:
        text: the text (anything ``str`` takes).
    """
    return Span(str(text), "bold")


def code(text: object) -> Span:
    """Text shown as code (a path, an architecture, a hash).

    Args:
        text: the text (anything ``str`` takes).
    """
    return Span(str(text), "code")


def spans(*parts: object) -> tuple[Span, ...]:
    """Spans from parts: a Span as it is, anything else as plain text.

    Args:
        *parts: Spans and plain text, in reading order.
    """
    return tuple(part if isinstance(part, Span) else Span(str(part)) for part in parts)


def paragraph(*parts: object) -> Paragraph:
    """A paragraph of :func:`spans`.

    Args:
        *parts: Spans and plain text, in reading order.
    """
    return Paragraph(spans(*parts))


def table(
    header: list[str], rows: list[list[Any]], numeric: tuple[int, ...] = (), names: tuple[int, ...] = ()
) -> Table:
    """A table; a cell is a Span, a tuple of Spans, or anything else as plain text.

    Args:
        header: the column titles.
        rows: the cells, row by row.
        numeric: the columns that hold numbers (0-based): a renderer never wraps them.
        names: the columns that hold hardenctl's names for things (checks, gates, attacks; never the data's class
            names): kept whole where there is room.
    """
    cells = tuple(tuple(cell if isinstance(cell, tuple) else spans(cell) for cell in row) for row in rows)
    return Table(tuple(header), cells, tuple(numeric), tuple(names))
