"""The HTML renderer: one self-contained file, the pictures and the accuracy-vs-ε curve embedded as data URIs.

It spells the same content as the Markdown report (:mod:`hardenctl.report.document`), so the two reports' tables
match row for row; all text is HTML-escaped, so a class named ``<script>`` is shown, never run. The images come in
as PNG bytes drawn once by :func:`hardenctl.report.outputs.write_outputs` (the Markdown's files are the same
drawings); without them the page says why (``notes``).
"""
from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import TYPE_CHECKING

from ..files import atomic_write
from .common import clean_text, format_eps
from .document import Heading, Image, Paragraph, Span, Table, build

if TYPE_CHECKING:
    from .schema import Report

STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 60em; margin: 2em auto; padding: 0 1em; color: #1d1d1f; }
.table-wrap { overflow-x: auto; margin: 0.6em 0 1.2em; }
table { border-collapse: collapse; }
th, td { border: 1px solid #d0d0d7; padding: 0.3em 0.7em; text-align: left; vertical-align: top; }
th { background: #f2f2f6; }
code { font-size: 0.9em; background: #f2f2f6; padding: 0 0.25em; border-radius: 3px; word-break: break-all; }
figure { margin: 1em 0; }
img { max-width: 100%; height: auto; }
.note { color: #6b6b70; }
@media (max-width: 40em) { body { margin: 1em auto; font-size: 14px; } th, td { padding: 0.25em 0.4em; } td { overflow-wrap: anywhere; } }
@media print {
  body { max-width: none; margin: 0; font-size: 11pt; color: #000; }
  .table-wrap { overflow: visible; }
  tr, figure, img { break-inside: avoid; page-break-inside: avoid; }
  h2, h3 { break-after: avoid; page-break-after: avoid; }
  th { background: #eee; -webkit-print-color-adjust: exact; print-color-adjust: exact; }
}
"""


def escape_html(value: object) -> str:
    """Literal text as HTML text or an attribute value."""
    return html.escape(clean_text(value), quote=True)


def _inline(spans: tuple[Span, ...]) -> str:
    tags = {"bold": "strong", "code": "code"}
    return "".join(f"<{tags[s.style]}>{escape_html(s.text)}</{tags[s.style]}>" if s.style in tags else escape_html(s.text)
                   for s in spans)


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def render_page(blocks, title: str, images: dict[str, bytes] | None = None, notes: list[str] | tuple[str, ...] = ()) -> str:
    """Document blocks (:mod:`hardenctl.report.document`) as one self-contained HTML page."""
    images = images or {}
    body = []
    for block in blocks:
        if isinstance(block, Heading):
            body.append(f"<h{block.level}>{escape_html(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            body.append(f"<p>{_inline(block.spans)}</p>")
        elif isinstance(block, Table):
            head = "".join(f"<th>{escape_html(h)}</th>" for h in block.header)
            rows = "".join("<tr>" + "".join(f"<td>{_inline(cell)}</td>" for cell in row) + "</tr>" for row in block.rows)
            body.append(f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>')
        elif isinstance(block, Image) and block.target in images:
            body.append(f'<figure><img alt="{escape_html(block.alt)}" src="{_data_uri(images[block.target])}"></figure>')
    body += [f'<p class="note">{escape_html(note)}</p>' for note in notes]
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{escape_html(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n" + "\n".join(body)
            + "\n</body>\n</html>\n")


def render_html(report: Report, images: dict[str, bytes] | None = None, notes: list[str] | tuple[str, ...] = ()) -> str:
    """The HTML document. ``images``: PNG bytes by target ("plot", "pictures"), each shown where the Markdown shows
    its file; ``notes``: why an image is missing, shown at the end."""
    images = images or {}
    title = f"hardenctl robustness report: {report.model.get('arch')}, {report.norm} eps {format_eps(report.eps, decimal=False)}"
    return render_page(build(report, plot="plot" in images, pictures="pictures" in images), title, images, notes)


def write_html(report: Report, path: str | Path, images: dict[str, bytes] | None = None,
               notes: list[str] | tuple[str, ...] = ()) -> None:
    """Write :func:`render_html` atomically."""
    atomic_write(path, render_html(report, images, notes))
