"""``--html``: the Markdown report as one self-contained HTML file, pictures embedded as base64 data URIs.

The HTML is made from :meth:`Report.to_markdown` itself, so its tables are the Markdown's and can never drift from
them. Only the Markdown the report uses is understood: ``#``/``##`` headings, paragraphs, pipe tables, an image on
a line of its own, ``**bold**`` and ```code```. The pictures (:mod:`hardenctl.pictures`) and the accuracy-vs-ε curve
need matplotlib (the ``plot`` extra); without it the HTML says so where they would be.
"""
from __future__ import annotations

import base64
import html
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from .files import atomic_write

if TYPE_CHECKING:
    from .report import Report

PLOT_MISSING = "accuracy-vs-eps plot skipped: install the [plot] extra (pip install 'hardenctl[plot]')"
_PICTURES, _PLOT = "hardenctl-pictures.png", "hardenctl-eps-sweep.png"  # placeholders replaced by data URIs
_IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)]*)\)")

STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 60em; margin: 2em auto; padding: 0 1em; color: #1d1d1f; }
table { border-collapse: collapse; margin: 0.6em 0 1.2em; }
th, td { border: 1px solid #d0d0d7; padding: 0.3em 0.7em; text-align: left; vertical-align: top; }
th { background: #f2f2f6; }
code { font-size: 0.9em; background: #f2f2f6; padding: 0 0.25em; border-radius: 3px; word-break: break-all; }
img { max-width: 100%; }
.note { color: #6b6b70; }
"""


def write_pictures(report: "Report", path: str | Path) -> tuple[str | None, list[str]]:
    """The pictures PNG next to a Markdown report: (its file name, or None; notes for the user)."""
    from .pictures import grid_note, write_grid

    note = grid_note(report.pictures)
    if write_grid(report.pictures, path):
        return Path(path).name, []
    return None, [note] if note else []


def _inline(text: str) -> str:
    """Escape, then ``code`` and **bold**."""
    parts = re.split(r"(`[^`]*`)", text)
    out = []
    for part in parts:
        if len(part) >= 2 and part.startswith("`") and part.endswith("`"):
            out.append(f"<code>{html.escape(part[1:-1])}</code>")
        else:
            out.append(re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html.escape(part)))
    return "".join(out)


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def markdown_to_html(markdown: str, images: dict[str, str] | None = None) -> str:
    """The report's Markdown as HTML body elements; ``images`` maps an image target to its (data) URI."""
    images = images or {}
    out: list[str] = []
    paragraph: list[str] = []
    lines = markdown.splitlines()

    def flush() -> None:
        if paragraph:
            out.append(f"<p>{_inline(' '.join(paragraph))}</p>")
            paragraph.clear()

    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        image = _IMAGE.fullmatch(line.strip())
        if not line.strip():
            flush()
        elif line.startswith("## ") or line.startswith("# "):
            flush()
            level = 2 if line.startswith("## ") else 1
            out.append(f"<h{level}>{_inline(line[level + 1:])}</h{level}>")
        elif image:
            flush()
            alt, target = image.groups()
            source = images.get(target, target)
            out.append(f'<figure><img alt="{html.escape(alt, quote=True)}" src="{html.escape(source, quote=True)}"></figure>')
        elif line.startswith("|"):
            flush()
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(_cells(lines[i]))
                i += 1
            body = rows[2:] if len(rows) > 1 and all(set(c) <= set("-: ") for c in rows[1]) else rows[1:]
            head = "".join(f"<th>{_inline(c)}</th>" for c in rows[0])
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>"
                       + "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in body)
                       + "</tbody></table>")
            continue
        else:
            paragraph.append(line.strip())
        i += 1
    flush()
    return "\n".join(out)


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _plot_png(report: "Report") -> bytes | None:
    from .report import write_plot

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "plot.png"
        return path.read_bytes() if write_plot(report, path) else None


def render_html(report: "Report") -> tuple[str, list[str]]:
    """(the HTML document, notes for the user)."""
    from .pictures import grid_note, grid_png

    notes: list[str] = []
    images: dict[str, str] = {}
    pictures = grid_png(report.pictures)
    if pictures is not None:
        images[_PICTURES] = _data_uri(pictures)
    elif grid_note(report.pictures):
        notes.append(grid_note(report.pictures))
    plot = _plot_png(report) if report.eps_sweep else None
    if plot is not None:
        images[_PLOT] = _data_uri(plot)
    elif report.eps_sweep:
        notes.append(PLOT_MISSING)
    markdown = report.to_markdown(_PLOT if plot is not None else None, _PICTURES if pictures is not None else None)
    body = markdown_to_html(markdown, images)
    if notes:
        body += "\n" + "\n".join(f'<p class="note">{html.escape(note)}</p>' for note in notes)
    title = f"hardenctl robustness report: {report.model.get('arch')}, {report.norm} eps {report.eps:.4g}"
    document = ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")
    return document, notes


def write_html(report: "Report", path: str | Path) -> list[str]:
    """Write the self-contained HTML report atomically; returns notes (pictures or plot skipped)."""
    document, notes = render_html(report)
    atomic_write(path, document)
    return notes
