"""Literal text spelled as Markdown: shared by everything that writes Markdown (the report, the model card, the step
summary, the harden report), so no renderer imports another to escape a name.

All text is escaped, so a class folder named ``a | b``, ``**x**``, ``<script>`` or ``a $\\frac$ b`` shows as spelled:
a pipe cannot split a table row, asterisks do not make bold, ``<`` starts no HTML and ``$`` no math on GitHub.
"""

from __future__ import annotations

import re

from .common import clean_text

# characters with a meaning in CommonMark/GFM inline text wherever they stand ($: GitHub math); "_" only matters
# at a word's edge (an underscore between two letters or digits can neither open nor close emphasis), so
# check_names_like_this stay readable in the raw file
_SPECIAL = re.compile(r"[\\`*\[\]<>|$~&]|_")


def escape_markdown(value: object) -> str:
    """Literal text as Markdown (inline, in a paragraph or a table cell).

    Args:
        value: the text (anything ``str`` takes); control characters are shown as their escapes first.
    """
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
    code span cannot escape it, and whether GitHub's math skips code spans is not something to rely on.

    Args:
        value: the text (anything ``str`` takes); control characters are shown as their escapes first.
    """
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
