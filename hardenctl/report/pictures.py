"""The pictures renderer: a :class:`~hardenctl.report.gallery.Gallery` drawn as one PNG grid with matplotlib.

Per sample its clean image, its adversarial version and the perturbation amplified to the full grey range, titled
with the true, clean and adversarial class names. Class names are data (a folder may be called ``a $\\frac$ b``), so
every text is drawn as plain text: no mathtext, no LaTeX, in fonts that have its glyphs where any installed font has
them (:mod:`.fonts`). Without matplotlib (the ``plot`` extra) nothing is drawn and :func:`grid_note` says why.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

from .common import MATPLOTLIB_PLAIN as PLAIN
from .common import clean_text
from .fonts import fonts_for, quiet_missing_glyphs

if TYPE_CHECKING:
    from torch import Tensor

    from .gallery import Gallery

PICTURES_MISSING = "adversarial-example pictures skipped: install the [plot] extra (pip install 'hardenctl[plot]')"


def _image(tensor: Tensor) -> Any:
    """CHW [0, 1] → what imshow takes (HW grey, HWC colour)."""
    array = tensor.clamp(0, 1).numpy()
    return array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0)


def _titles(gallery: Gallery, entry: dict[str, Any]) -> tuple[str, str, str]:
    """A column's three titles: the class names (data, so plain text), the verdict, the amplification."""
    keys = ("label", "clean_prediction", "adversarial_prediction")
    true, before, after = (clean_text(gallery.name(entry[key])) for key in keys)
    largest = float((entry["adversarial"] - entry["clean"]).abs().max())
    return (
        f"#{entry['index']} true: {true}\nclean: {before}",
        f"adversarial: {after}\n{'broken' if entry['broken'] else 'still robust'}",
        f"×{0.5 / largest:.3g} (L∞ {largest:.3g})" if largest > 0 else "no change",
    )


def grid_png(gallery: Gallery | None) -> bytes | None:
    """The pictures as PNG bytes; None without matplotlib or without samples."""
    chosen = gallery.chosen() if gallery is not None else []
    if not chosen:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    titles = [_titles(gallery, entry) for entry in chosen]
    heading = f"clean · adversarial · amplified perturbation ({clean_text(gallery.norm)} ε = {gallery.eps:.4g})"
    text = {**PLAIN, **fonts_for([heading, *(title for column in titles for title in column)])}
    columns = len(chosen)
    fig, axes = plt.subplots(3, columns, figsize=(1.45 * columns + 0.9, 5.2), dpi=110, squeeze=False)
    try:
        with quiet_missing_glyphs():  # names no installed font can draw: boxes, without a warning per character
            for column, (entry, column_titles) in enumerate(zip(chosen, titles)):
                clean, adversarial = entry["clean"], entry["adversarial"]
                delta = adversarial - clean
                largest = float(delta.abs().max())
                amplified = 0.5 + delta * (0.5 / largest) if largest > 0 else delta + 0.5
                grey = dict(cmap="gray", vmin=0, vmax=1) if clean.shape[0] == 1 else {}
                for row, (picture, title) in enumerate(zip((clean, adversarial, amplified), column_titles)):
                    axis = axes[row][column]
                    axis.imshow(_image(picture), interpolation="nearest", **grey)
                    colour = "#b00020" if row == 1 and entry["broken"] else "black"
                    axis.set_title(title, fontsize=7, color=colour, **text)
                    axis.set_xticks([])
                    axis.set_yticks([])
            for row, label in enumerate(("clean", "adversarial", "perturbation\n(amplified)")):
                axes[row][0].set_ylabel(label, fontsize=8, **PLAIN)
            fig.suptitle(heading, fontsize=9, **text)
            fig.tight_layout()
            buffer = io.BytesIO()
            fig.savefig(buffer, format="png")
    finally:  # a figure left open on an error would pile up in pyplot's registry
        plt.close(fig)
    return buffer.getvalue()


def grid_note(gallery: Gallery | None) -> str | None:
    """Why no pictures were drawn, for the user; None when they were (or none were asked for)."""
    if gallery is None or not gallery.chosen():
        return None
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return PICTURES_MISSING
    return None
