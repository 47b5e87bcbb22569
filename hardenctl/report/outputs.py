"""``write_outputs``: every file the user asked for, each written on its own.

A failure in one renderer (a bug, a name no escaping foresaw) must not cost the others: the JSON a CI gate reads
is written first, every other output is still tried, and only then is the first error raised again, so the CLI
reports an internal error instead of a failed gate. The pictures and the accuracy-vs-ε curve are drawn once and
shared: the Markdown gets them as PNG files beside it, the HTML embedded.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..files import atomic_write
from .html import render_html
from .junit import render_junit
from .markdown import render_markdown
from .pictures import grid_note, grid_png
from .plot import PLOT_MISSING, plot_png

if TYPE_CHECKING:
    from .schema import Report



def write_outputs(report: Report, json_path=None, markdown_path=None, junit_path=None, html_path=None) -> list[str]:
    """Write the requested files atomically; returns notes (e.g. plot skipped). Raises the first renderer's error
    once every output that could be written has been."""
    notes: list[str] = []
    errors: list[Exception] = []

    def write(path, render: Callable[[], str | bytes]) -> bool:
        try:
            atomic_write(path, render())
            return True
        except Exception as exc:  # noqa: BLE001 - kept, and raised again once the other outputs are written
            errors.append(exc)
            return False

    def draw(render: Callable[[], bytes | None]) -> bytes | None:
        try:
            return render()
        except Exception as exc:  # noqa: BLE001 - as above
            errors.append(exc)
            return None

    if json_path:
        write(json_path, report.to_json)
    images: dict[str, bytes] = {}
    if markdown_path or html_path:
        pictures = draw(lambda: grid_png(report.pictures))
        if pictures is not None:
            images["pictures"] = pictures
        elif grid_note(report.pictures):
            notes.append(grid_note(report.pictures))
        if report.eps_sweep:
            failed_before = len(errors)
            plot = draw(lambda: plot_png(report))
            if plot is not None:
                images["plot"] = plot
            elif len(errors) == failed_before:  # not drawn for want of matplotlib, not for an error
                notes.append(PLOT_MISSING)
    if markdown_path:
        names: dict[str, str] = {}
        for target, suffix in (("plot", ".eps_sweep.png"), ("pictures", ".pictures.png")):
            path = Path(markdown_path).with_suffix(suffix)
            if target in images and write(path, lambda: images[target]):
                names[target] = path.name
        write(markdown_path, lambda: render_markdown(report, names.get("plot"), names.get("pictures")))
    if junit_path:
        write(junit_path, lambda: render_junit(report))
    if html_path:
        write(html_path, lambda: render_html(report, images, list(dict.fromkeys(notes))))
    if errors:
        raise errors[0]
    return list(dict.fromkeys(notes))
