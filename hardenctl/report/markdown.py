"""The Markdown renderer: the report's content (:mod:`hardenctl.report.document`) in GitHub-flavoured Markdown.

All text is escaped, so a class folder named ``a | b``, ``**x**``, ``<script>`` or ``a $\\frac$ b`` shows as spelled:
a pipe cannot split a table row, asterisks do not make bold, ``<`` starts no HTML and ``$`` no math on GitHub.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from .common import clean_text
from .document import Heading, Image, Paragraph, Span, Table, Verdict, build

if TYPE_CHECKING:
    from .schema import Report

# characters with a meaning in CommonMark/GFM inline text wherever they stand ($: GitHub math); "_" only matters
# at a word's edge (an underscore between two letters or digits can neither open nor close emphasis), so
# check_names_like_this stay readable in the raw file
_SPECIAL = re.compile(r"[\\`*\[\]<>|$~&]|_")
_LINK_UNSAFE = re.compile(r"[\s()<>\\]")


def escape_markdown(value: object) -> str:
    """Literal text as Markdown (inline, in a paragraph or a table cell)."""
    text = clean_text(value)

    def escaped(match: re.Match[str]) -> str:
        char, at = match.group(), match.start()
        if char == "_" and 0 < at < len(text) - 1 and text[at - 1].isalnum() and text[at + 1].isalnum():
            return char
        return "\\" + char

    return _SPECIAL.sub(escaped, text)


def code_span(value: object) -> str:
    """Literal text as a Markdown code span: fenced by more backticks than any run inside it (no escapes apply
    there), padded when it starts or ends with a backtick. For paragraphs only: in a GFM table a pipe would still
    split the cell, so the document puts no code in tables. Text with a ``$`` is escaped plain text instead: a
    code span cannot escape it, and whether GitHub's math skips code spans is not something to rely on."""
    text = clean_text(value)
    if "$" in text:
        return escape_markdown(text)
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = (
        " "
        if text.startswith("`") or text.endswith("`") or (text.startswith(" ") and text.endswith(" ") and text.strip())
        else ""
    )
    return f"{fence}{pad}{text}{pad}{fence}"


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


def _row(cells) -> str:
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


def render_blocks(blocks, names: dict[str, str | None] | None = None) -> str:
    """Document blocks (:mod:`hardenctl.report.document`) as Markdown; ``names``: the image files by target."""
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
    """The Markdown report; ``plot_name``/``pictures_name``: the PNG files beside it, None to leave them out."""
    names = {"plot": plot_name, "pictures": pictures_name}
    return render_blocks(build(report, plot=plot_name is not None, pictures=pictures_name is not None), names)
