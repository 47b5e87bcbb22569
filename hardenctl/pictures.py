"""What a report shows of the images: a few samples beside their adversarial versions and the perturbation.

:class:`Gallery` keeps the candidates while an evaluation runs, the same whichever process ran which batch: the
lowest-index samples an attack broke, then the lowest-index ones that stayed robust (a sample misclassified before
any attack has no adversarial version). :func:`grid_png` draws them with matplotlib (the ``plot`` extra); without
it nothing is drawn and the caller says so.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from .files import atomic_write

if TYPE_CHECKING:  # torch is imported by whoever hands us tensors; the report writer need not import it
    from torch import Tensor

PICTURES = 8  # samples shown by default


@dataclass
class Gallery:
    """Candidates for the pictures: clean image, the point it was last scored at, labels and predictions."""

    size: int = PICTURES
    entries: list[dict[str, Any]] = field(default_factory=list)  # index, clean, adversarial, label, clean/adversarial_prediction, broken
    class_names: list[str] = field(default_factory=list)
    eps: float = 0.0
    norm: str = "linf"

    def offer(self, start: int, x: Tensor, worst: Tensor, y: Tensor, clean_prediction: Tensor,
              adversarial_prediction: Tensor, attacked: Tensor, broken: Tensor) -> None:
        """One batch's samples (rows ``start..``); only attacked samples are candidates, and only the lowest-index
        ``size`` of each kind (broken, robust) are kept, so the choice does not depend on the order batches come in."""
        if self.size <= 0:
            return
        kept = {kind: [e["index"] for e in self.entries if e["broken"] == kind] for kind in (True, False)}
        for row in attacked.nonzero().squeeze(1).tolist():
            kind = bool(broken[row])
            if len(kept[kind]) >= self.size and start + row > max(kept[kind]):
                continue
            kept[kind].append(start + row)
            self.entries.append({"index": start + row, "clean": x[row].detach().float().cpu().clone(),
                                 "adversarial": worst[row].detach().float().cpu().clone(), "label": int(y[row]),
                                 "clean_prediction": int(clean_prediction[row]),
                                 "adversarial_prediction": int(adversarial_prediction[row]), "broken": kind})
        self._prune()

    def _prune(self) -> None:
        unique = {e["index"]: e for e in self.entries}
        broken = sorted((e for e in unique.values() if e["broken"]), key=lambda e: e["index"])[:self.size]
        robust = sorted((e for e in unique.values() if not e["broken"]), key=lambda e: e["index"])[:self.size]
        self.entries = broken + robust

    def merge(self, others: Iterable["Gallery" | dict[str, Any]]) -> "Gallery":
        """This gallery with the candidates of ``others`` (galleries or their :meth:`to_state`) added."""
        for other in others:
            self.entries.extend(dict(e) for e in (other.entries if isinstance(other, Gallery) else _unpack(other)))
        self._prune()
        return self

    def chosen(self) -> list[dict[str, Any]]:
        """The samples shown: broken ones first, then robust ones, at most ``size``."""
        return (self.entries[: self.size] if self.size > 0 else [])

    def to_state(self) -> dict[str, Any]:
        """The candidates as a few stacked tensors (a resume state saves them after every batch)."""
        if not self.entries:
            return {}
        import torch

        state = {key: torch.stack([e[key] for e in self.entries]) for key in ("clean", "adversarial")}
        state.update({key: torch.tensor([e[key] for e in self.entries]) for key in _NUMBERS})
        return state

    def name(self, label: int) -> str:
        return self.class_names[label] if 0 <= label < len(self.class_names) else str(label)


_NUMBERS = ("index", "label", "clean_prediction", "adversarial_prediction", "broken")


def _unpack(state: dict[str, Any]) -> list[dict[str, Any]]:
    if not state:
        return []
    numbers = {key: state[key].tolist() for key in _NUMBERS}
    return [{"clean": state["clean"][i].clone(), "adversarial": state["adversarial"][i].clone(),
             **{key: numbers[key][i] for key in _NUMBERS}} for i in range(len(numbers["index"]))]


def _image(tensor: Tensor) -> Any:
    """CHW [0, 1] → what imshow takes (HW grey, HWC colour)."""
    array = tensor.clamp(0, 1).numpy()
    return array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0)


def grid_png(gallery: Gallery | None) -> bytes | None:
    """The pictures as PNG bytes: per sample its clean image, its adversarial version and the perturbation amplified
    to the full grey range, with true, clean and adversarial labels. None without matplotlib or without samples."""
    chosen = gallery.chosen() if gallery is not None else []
    if not chosen:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    columns = len(chosen)
    fig, axes = plt.subplots(3, columns, figsize=(1.45 * columns + 0.9, 5.2), dpi=110, squeeze=False)
    for column, entry in enumerate(chosen):
        clean, adversarial = entry["clean"], entry["adversarial"]
        delta = adversarial - clean
        largest = float(delta.abs().max())
        amplified = 0.5 + delta * (0.5 / largest) if largest > 0 else delta + 0.5
        grey = dict(cmap="gray", vmin=0, vmax=1) if clean.shape[0] == 1 else {}
        true, before, after = (gallery.name(entry[k]) for k in ("label", "clean_prediction", "adversarial_prediction"))
        titles = (f"#{entry['index']} true: {true}\nclean: {before}",
                  f"adversarial: {after}\n{'broken' if entry['broken'] else 'still robust'}",
                  f"×{0.5 / largest:.3g} (L∞ {largest:.3g})" if largest > 0 else "no change")
        for row, (picture, title) in enumerate(zip((clean, adversarial, amplified), titles)):
            axis = axes[row][column]
            axis.imshow(_image(picture), interpolation="nearest", **grey)
            axis.set_title(title, fontsize=7, color="#b00020" if row == 1 and entry["broken"] else "black")
            axis.set_xticks([])
            axis.set_yticks([])
    for row, label in enumerate(("clean", "adversarial", "perturbation\n(amplified)")):
        axes[row][0].set_ylabel(label, fontsize=8)
    fig.suptitle(f"clean · adversarial · amplified perturbation ({gallery.norm} ε = {gallery.eps:.4g})", fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def write_grid(gallery: Gallery | None, path: str | Path) -> bool:
    """Write :func:`grid_png` to ``path`` atomically; False when there is nothing to draw or no matplotlib."""
    png = grid_png(gallery)
    if png is None:
        return False
    atomic_write(path, png)
    return True


def grid_note(gallery: Gallery | None) -> str | None:
    """Why no pictures were drawn, for the user; None when they were (or none were asked for)."""
    if gallery is None or not gallery.chosen():
        return None
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return "adversarial-example pictures skipped: install the [plot] extra (pip install 'hardenctl[plot]')"
    return None
