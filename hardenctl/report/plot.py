"""The plot renderer: robust accuracy against ε (``--eps-sweep``) as a PNG, with matplotlib (the ``plot`` extra).

The title names the model's architecture, which is data: it is drawn as plain text (no mathtext, no LaTeX), in fonts
that have its glyphs where any installed font has them (:mod:`.fonts`).
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from .common import MATPLOTLIB_PLAIN as PLAIN
from .common import clean_text
from .fonts import fonts_for, quiet_missing_glyphs

if TYPE_CHECKING:
    from .schema import Report

PLOT_MISSING = "accuracy-vs-eps plot skipped: install the [plot] extra (pip install 'hardenctl[plot]')"


def plot_png(report: Report) -> bytes | None:
    """The accuracy-vs-ε curve as PNG bytes; None without matplotlib or without a sweep."""
    if not report.eps_sweep:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    title = f"{clean_text(report.model.get('arch'))} · suite {clean_text(report.suite)}"
    axis_label = f"{clean_text(report.norm)} ε"
    text = {**PLAIN, **fonts_for([title, axis_label])}
    fig, ax = plt.subplots(figsize=(4.5, 3.2), dpi=120)
    try:
        with quiet_missing_glyphs():  # a name no installed font can draw: boxes, without a warning per character
            ax.plot([s["eps"] for s in report.eps_sweep], [s["robust_accuracy"] for s in report.eps_sweep], marker="o")
            ax.set_xlabel(axis_label, **text)
            ax.set_ylabel("robust accuracy", **PLAIN)
            ax.set_ylim(0, 1)
            ax.grid(alpha=0.3)
            ax.set_title(title, **text)
            fig.tight_layout()
            buffer = io.BytesIO()
            fig.savefig(buffer, format="png")
    finally:
        plt.close(fig)
    return buffer.getvalue()
