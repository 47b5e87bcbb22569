"""The evaluation report: the :class:`Report` dataclass (versioned JSON) at the bottom, one renderer per output above.

Layers, arrows pointing down: ``outputs`` (writes a report's files) → renderers (``markdown``, ``html``, ``junit``,
``console``, ``pictures``, ``plot``, ``card``, ``robustbench``, ``github``; none imports another) → the content, as
document blocks (``document`` for a report, ``comparison`` for two, with ``verdict``, ``sequential_section`` and
``paired_section``, all on ``blocks``) → ``reader`` (the one validating reader for every report read back) →
``schema`` (Report, Check, Gate, SampleResults, JSON) and ``gallery`` (the images a report carries) → ``text``
(Markdown escaping, for every Markdown writer) → ``common``.
Every renderer escapes names for its own syntax; no renderer imports the schema at run time.
"""

from __future__ import annotations

from .common import GATE_BASIS, plural
from .console import comparison_table, render_table, render_work_table
from .gallery import PICTURES, Gallery
from .github import append_step_summary, failure_annotation, failure_summary, gate_annotations, in_github_actions
from .html import comparison_html, render_html
from .junit import render_junit
from .markdown import comparison_markdown, render_markdown
from .outputs import OutputsNotWritten, write_report_files
from .pictures import grid_note, grid_png
from .plot import PLOT_MISSING, plot_png
from .reader import load_report, read_report_json, report_from_dict
from .robustbench import check_dataset_key
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
    "OutputsNotWritten",
    "Report",
    "SampleResults",
    "append_step_summary",
    "check_dataset_key",
    "comparison_html",
    "comparison_markdown",
    "comparison_table",
    "failure_annotation",
    "failure_summary",
    "gate_annotations",
    "grid_note",
    "grid_png",
    "in_github_actions",
    "load_report",
    "read_report_json",
    "plot_png",
    "plural",
    "render_html",
    "render_junit",
    "render_markdown",
    "render_table",
    "render_work_table",
    "report_from_dict",
    "write_report_files",
]
