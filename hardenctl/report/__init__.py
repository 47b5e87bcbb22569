"""The evaluation report: the :class:`Report` dataclass (versioned JSON) at the bottom, one renderer per output above.

Layers, arrows pointing down: ``outputs`` (writes the files) → renderers (``markdown``, ``html``, ``junit``,
``console``, ``pictures``, ``plot``; none imports another) → ``document`` (what the Markdown and HTML say) →
``reader`` (the one validating reader for every report read back) → ``schema`` (Report, Check, Gate, SampleResults,
JSON) and ``gallery`` (the images a report carries) → ``common``.
Every renderer escapes names for its own syntax; no renderer imports the schema at run time.
"""

from __future__ import annotations

from .common import GATE_BASIS
from .console import render_table, render_work_table
from .gallery import PICTURES, Gallery
from .html import render_html, write_html
from .junit import render_junit
from .markdown import render_markdown
from .outputs import write_report_files
from .pictures import grid_note, grid_png, write_grid
from .plot import PLOT_MISSING, plot_png, write_plot
from .reader import load_report, read_report_json, report_from_dict
from .schema import REGRESSED_SHOWN, SCHEMA_VERSION, Check, Gate, Report, SampleResults

__all__ = [
    "GATE_BASIS",
    "PICTURES",
    "PLOT_MISSING",
    "REGRESSED_SHOWN",
    "SCHEMA_VERSION",
    "Check",
    "Gallery",
    "Gate",
    "Report",
    "SampleResults",
    "grid_note",
    "grid_png",
    "load_report",
    "read_report_json",
    "plot_png",
    "render_html",
    "render_junit",
    "render_markdown",
    "render_table",
    "render_work_table",
    "report_from_dict",
    "write_grid",
    "write_html",
    "write_report_files",
    "write_plot",
]
