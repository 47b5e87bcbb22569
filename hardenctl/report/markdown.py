"""The Markdown renderer: a report's or a comparison's content (:mod:`.document`, :mod:`.comparison`) in
GitHub-flavoured Markdown.

All text is escaped (:mod:`.text`), so a class folder named ``a | b``, ``**x**``, ``<script>`` or ``a $\\frac$ b``
shows as spelled: a pipe cannot split a table row, asterisks do not make bold, ``<`` starts no HTML and ``$`` no math
on GitHub.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Iterable

from .blocks import Block, Heading, Image, Paragraph, Span, Table, Verdict
from .common import clean_text
from .comparison import build_comparison
from .document import build
from .text import code_span, escape_markdown

if TYPE_CHECKING:
    from ..compare import Comparison
    from .schema import Report

_LINK_UNSAFE = re.compile(r"[\s()<>\\]")


def _inline(spans: tuple[Span, ...]) -> str:
    out = []
    for part in spans:
        if part.style == "code":
            out.append(code_span(part.text))
        elif part.style == "bold":
            out.append(f"**{escape_markdown(part.text)}**")
        else:
            out.append(escape_markdown(part.text))
    return "".join(out)


def _row(cells: Iterable[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _target(name: str) -> str:
    """A link destination; in angle brackets when the file name has a space or a bracket."""
    return f"<{name}>" if _LINK_UNSAFE.search(name) else name


def _verdict(block: Verdict) -> str:
    """The banner as one line (what a GitHub step summary shows first): ``**FAIL** · 1 of 2 gates failed ·
    min_robust_acc: 16.67% < 50.00% · clean accuracy: 91.67% (80.4–96.7) · …``."""
    parts = [block.summary, *block.details]
    parts += [f"{label}: {value}" for label, value in block.figures]
    return " · ".join([f"**{escape_markdown(block.label)}**", *(escape_markdown(part) for part in parts)])


def render_blocks(blocks: list[Block], names: dict[str, str | None] | None = None) -> str:
    """Document blocks as Markdown.

    Args:
        blocks: the content (:mod:`.blocks`).
        names: the image files by target ("plot", "pictures"); an image without one is left out.
    """
    names = names or {}
    parts = []
    for block in blocks:
        if isinstance(block, Heading):
            parts.append("#" * block.level + " " + escape_markdown(block.text))
        elif isinstance(block, Paragraph):
            parts.append(_inline(block.spans))
        elif isinstance(block, Table):
            lines = [_row(escape_markdown(h) for h in block.header), "|" + "---|" * len(block.header)]
            lines += [_row(_inline(cell) for cell in row) for row in block.rows]
            parts.append("\n".join(lines))
        elif isinstance(block, Verdict):
            parts.append(_verdict(block))
        elif isinstance(block, Image) and names.get(block.target):
            parts.append(f"![{escape_markdown(block.alt)}]({_target(clean_text(names[block.target]))})")
    return "\n\n".join(parts) + "\n"


def render_markdown(report: Report, plot_name: str | None = None, pictures_name: str | None = None) -> str:
    """The Markdown report.

    Args:
        report: the report.
        plot_name: the accuracy-vs-ε PNG file beside it (a link relative to the Markdown); None to leave it out.
        pictures_name: the adversarial examples' PNG file beside it; None to leave them out.
    """
    names = {"plot": plot_name, "pictures": pictures_name}
    return render_blocks(build(report, plot=plot_name is not None, pictures=pictures_name is not None), names)


def comparison_markdown(comparison: Comparison) -> str:
    """The comparison as Markdown (what ``compare --markdown`` writes and the step summary shows).

    Args:
        comparison: the two reports, their paired comparison and gates.
    """
    return render_blocks(build_comparison(comparison))
