"""The HTML renderer: one self-contained page, the pictures and the accuracy-vs-ε curve embedded as data URIs.

It spells the same content as the Markdown renderer (a report's :mod:`.document`, a comparison's :mod:`.comparison`),
so the two outputs' tables match row for row; all text is HTML-escaped, so a class named ``<script>`` is shown, never
run. The images come in as PNG bytes drawn once by :func:`hardenctl.report.outputs.write_report_files` (the
Markdown's files are the same drawings); without them the page says why (``notes``).
"""

from __future__ import annotations

import base64
import html
import re
from typing import TYPE_CHECKING

from .blocks import Block, Heading, Image, Paragraph, Span, Table, Verdict
from .common import clean_text, format_eps
from .comparison import build_comparison
from .document import build

if TYPE_CHECKING:
    from ..compare import Comparison
    from .schema import Report

COLUMNS = 16  # a table's box marks its number columns num-0 … num-15 (Table.numeric), its name columns name-*
# A number column never wraps ("1 / 0" for 10 on a phone), a column of our names (checks, gates) only on a narrow
# screen; a table too wide scrolls sideways in its box, which shows a shadow at an edge with more table behind it: two
# "local" white covers scroll with the table and hide the two fixed shadows wherever the table ends, so a table that
# fits shows none (no script: the page runs none).
STYLE = (
    """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 60em; margin: 2em auto; \
padding: 0 1em; color: #1d1d1f; }
h1 { line-height: 1.2; }
.table-wrap { overflow-x: auto; margin: 0.6em 0 1.2em; background-color: #fff;
  background-image: linear-gradient(to right, #fff 40%, rgba(255, 255, 255, 0)),
    linear-gradient(to left, #fff 40%, rgba(255, 255, 255, 0)),
    radial-gradient(farthest-side at 0 50%, rgba(0, 0, 0, 0.3), rgba(0, 0, 0, 0)),
    radial-gradient(farthest-side at 100% 50%, rgba(0, 0, 0, 0.3), rgba(0, 0, 0, 0));
  background-position: left center, right center, left center, right center;
  background-size: 2.5em 100%, 2.5em 100%, 0.9em 100%, 0.9em 100%;
  background-repeat: no-repeat; background-attachment: local, local, scroll, scroll; }
table { border-collapse: collapse; }
th, td { border: 1px solid #d0d0d7; padding: 0.3em 0.7em; text-align: left; vertical-align: top;
  overflow-wrap: break-word; }
th { background: #f2f2f6; }
"""
    + ", ".join(f".num-{i} td:nth-child({i + 1})" for i in range(COLUMNS))
    + """ {
  white-space: nowrap; font-variant-numeric: tabular-nums; }
@media (min-width: 50em) { """
    + ", ".join(f".name-{i} td:nth-child({i + 1})" for i in range(COLUMNS))
    + """ {
  white-space: nowrap; } """
    + ", ".join(f".name-{i} td:nth-child({i + 1}) wbr" for i in range(COLUMNS))
    + """ {
  display: none; } }
code { font-size: 0.9em; background: #f2f2f6; padding: 0 0.25em; border-radius: 3px; overflow-wrap: anywhere; }
code.word { white-space: nowrap; }
figure { margin: 1em 0; }
img { max-width: 100%; height: auto; }
.note { color: #6b6b70; }
.verdict { border: 1px solid; border-left-width: 0.4em; border-radius: 6px; padding: 0.5em 0.9em; \
margin: 1em 0 1.3em; }
.verdict p { margin: 0.25em 0; }
.verdict-head { font-size: 1.15em; }
.verdict-head strong { letter-spacing: 0.04em; margin-right: 0.15em; }
.verdict-pass { border-color: #1a7f37; background: #effaf2; } .verdict-pass .verdict-head strong { color: #116329; }
.verdict-fail { border-color: #cf222e; background: #fff1f0; } .verdict-fail .verdict-head strong { color: #a40e26; }
.verdict-none { border-color: #9a6700; background: #fff8e6; } .verdict-none .verdict-head strong { color: #7d4e00; }
.figures { display: flex; flex-wrap: wrap; gap: 0.3em 1.6em; margin-top: 0.5em; }
.figure-label { font-size: 0.8em; color: #57575c; }
.figure-value { white-space: nowrap; font-variant-numeric: tabular-nums; font-weight: 600; }
@media (max-width: 40em) {
  body { margin: 1em auto; font-size: 14px; } h1 { font-size: 1.6em; } th, td { padding: 0.25em 0.4em; } }
@media print {
  body { max-width: none; margin: 0; font-size: 11pt; color: #000; }
  .table-wrap { overflow: visible; background: none; }
  tr, figure, img, .verdict { break-inside: avoid; page-break-inside: avoid; }
  h2, h3 { break-after: avoid; page-break-after: avoid; }
  th, .verdict { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  th { background: #eee; }
}
"""
)
LONG_TOKEN = 20  # characters: a longer run without spaces (a path, a check name) may break after / \\ _
SHORT_CODE = 32  # characters: shorter code (an architecture, a suite) is never split across lines


def escape_html(value: object) -> str:
    """Literal text as HTML text or an attribute value."""
    return html.escape(clean_text(value), quote=True)


def _breakable(value: object) -> str:
    """Literal text as HTML, with a ``<wbr>`` after each ``/``, ``\\`` and ``_`` of a long token: a path or a
    check name then wraps at its parts rather than overflowing or breaking mid-word."""
    return "".join(
        re.sub(r"([/\\_])", r"\1<wbr>", part) if len(part) > LONG_TOKEN else part
        for part in re.split(r"(\s+)", escape_html(value))
    )


def _inline(spans: tuple[Span, ...]) -> str:
    out = []
    for part in spans:
        if part.style == "code":
            short = len(part.text) <= SHORT_CODE
            out.append(
                f'<code class="word">{escape_html(part.text)}</code>'
                if short
                else f"<code>{_breakable(part.text)}</code>"
            )
        elif part.style == "bold":
            out.append(f"<strong>{_breakable(part.text)}</strong>")
        else:
            out.append(_breakable(part.text))
    return "".join(out)


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _table(block: Table) -> str:
    classes = [f"num-{i}" for i in block.numeric if i < COLUMNS] + [f"name-{i}" for i in block.names if i < COLUMNS]
    head = "".join(f"<th>{escape_html(h)}</th>" for h in block.header)
    rows = "".join("<tr>" + "".join(f"<td>{_inline(cell)}</td>" for cell in row) + "</tr>" for row in block.rows)
    box = " ".join(["table-wrap", *classes])  # the classes go on the box: the table itself stays a plain <table>
    return f'<div class="{box}"><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>'


def _verdict(block: Verdict) -> str:
    """The banner: outcome and summary, a line per deciding gate, then the key numbers as label/value pairs."""
    lines = "".join(f"<p>{_breakable(line)}</p>" for line in block.details)
    figures = "".join(
        f'<div><div class="figure-label">{escape_html(label)}</div>'
        f'<div class="figure-value">{escape_html(value)}</div></div>'
        for label, value in block.figures
    )
    head = f"<strong>{escape_html(block.label)}</strong> {_breakable(block.summary)}"
    return (
        f'<div class="verdict verdict-{escape_html(block.outcome)}"><p class="verdict-head">{head}</p>{lines}'
        f'<div class="figures">{figures}</div></div>'
    )


def render_page(
    blocks: list[Block], title: str, images: dict[str, bytes] | None = None, notes: list[str] | tuple[str, ...] = ()
) -> str:
    """Document blocks as one self-contained HTML page.

    Args:
        blocks: the content (:mod:`.blocks`).
        title: the page's title.
        images: PNG bytes by target ("plot", "pictures"); an image without them is left out.
        notes: lines shown at the end (why an image is missing).
    """
    images = images or {}
    body = []
    for block in blocks:
        if isinstance(block, Heading):
            body.append(f"<h{block.level}>{escape_html(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            body.append(f"<p>{_inline(block.spans)}</p>")
        elif isinstance(block, Table):
            body.append(_table(block))
        elif isinstance(block, Verdict):
            body.append(_verdict(block))
        elif isinstance(block, Image) and block.target in images:
            body.append(
                f'<figure><img alt="{escape_html(block.alt)}" src="{_data_uri(images[block.target])}"></figure>'
            )
    body += [f'<p class="note">{escape_html(note)}</p>' for note in notes]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape_html(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


def render_html(report: Report, images: dict[str, bytes] | None = None, notes: list[str] | tuple[str, ...] = ()) -> str:
    """The HTML report.

    Args:
        report: the report.
        images: PNG bytes by target ("plot", "pictures"), each shown where the Markdown shows its file.
        notes: why an image is missing, shown at the end.
    """
    images = images or {}
    threat = f"{report.norm} eps {format_eps(report.eps, decimal=False)}"
    title = f"hardenctl robustness report: {report.model.get('arch')}, {threat}"
    return render_page(build(report, plot="plot" in images, pictures="pictures" in images), title, images, notes)


def comparison_html(comparison: Comparison) -> str:
    """The comparison as a self-contained HTML page (what ``compare --html`` writes).

    Args:
        comparison: the two reports, their paired comparison and gates.
    """
    title = f"hardenctl comparison: {comparison.old_name} vs {comparison.new_name}"
    return render_page(build_comparison(comparison), title)
