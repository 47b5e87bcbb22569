"""``write_report_files``: every report file the user asked for, each written on its own.

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


class OutputsNotWritten(Exception):
    """Some requested outputs could not be written: ``failures`` pairs each path with its error. The others were
    written, so the caller can still report a verdict and name the missing files (issue 28)."""

    def __init__(self, failures: list[tuple[Path, BaseException]]):
        self.failures = failures
        super().__init__("; ".join(f"{path}: {type(error).__name__}: {error}" for path, error in failures))


def write_report_files(
    report: Report, json_path=None, markdown_path=None, junit_path=None, html_path=None
) -> list[str]:
    """Write the requested files atomically; returns notes (e.g. plot skipped). Raises :class:`OutputsNotWritten`,
    naming every output that failed, once every output that could be written has been."""
    notes: list[str] = []
    errors: list[tuple[Path, BaseException]] = []

    def write(path, render: Callable[[], str | bytes]) -> bool:
        try:
            atomic_write(path, render())
            return True
        except Exception as exc:  # noqa: BLE001 - kept, and raised again once the other outputs are written
            errors.append((Path(path), exc))
            return False

    def draw(render: Callable[[], bytes | None], path: Path) -> bytes | None:
        try:
            return render()
        except Exception as exc:  # noqa: BLE001 - as above
            errors.append((path, exc))
            return None

    if json_path:
        write(json_path, report.to_json)
    images: dict[str, bytes] = {}
    if markdown_path or html_path:
        drawn_for = Path(markdown_path or html_path)
        pictures = draw(lambda: grid_png(report.pictures), drawn_for)
        if pictures is not None:
            images["pictures"] = pictures
        elif grid_note(report.pictures):
            notes.append(grid_note(report.pictures))
        if report.eps_sweep:
            failed_before = len(errors)
            plot = draw(lambda: plot_png(report), drawn_for)
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
        raise OutputsNotWritten(errors)
    return list(dict.fromkeys(notes))
