"""Which images a report shows: a few samples beside their adversarial versions and the perturbation.

:class:`Gallery` keeps the candidates while an evaluation runs, the same whichever process ran which batch: the
lowest-index samples an attack broke, then the lowest-index ones that stayed robust (a sample misclassified before
any attack has no adversarial version). It is data the report carries (``Report.pictures``), so it lives at the
bottom of the package with the schema; :mod:`hardenctl.report.pictures` draws it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Sequence

if TYPE_CHECKING:  # torch is imported by whoever hands us tensors; the report writer need not import it
    from torch import Tensor

PICTURES = 8  # samples shown by default


@dataclass
class Gallery:
    """Candidates for the pictures: clean image, the point it was last scored at, labels and predictions."""

    size: int = PICTURES
    entries: list[dict[str, Any]] = field(
        default_factory=list
    )  # index, clean, adversarial, label, clean/adversarial_prediction, broken
    class_names: list[str] = field(default_factory=list)
    eps: float = 0.0
    norm: str = "linf"

    def offer(
        self,
        start: int | Sequence[int],
        x: Tensor,
        worst: Tensor,
        y: Tensor,
        clean_prediction: Tensor,
        adversarial_prediction: Tensor,
        attacked: Tensor,
        broken: Tensor,
    ) -> None:
        """One batch's samples (rows ``start..``, or each row's index when ``start`` lists them: a sequential run's
        batches hold images in a random order); only attacked samples are candidates, and only the lowest-index
        ``size`` of each kind (broken, robust) are kept, so the choice does not depend on the order batches come in."""
        if self.size <= 0:
            return
        indices = [start + row for row in range(len(y))] if isinstance(start, int) else [int(i) for i in start]
        kept = {kind: [e["index"] for e in self.entries if e["broken"] == kind] for kind in (True, False)}
        for row in attacked.nonzero().squeeze(1).tolist():
            kind = bool(broken[row])
            if len(kept[kind]) >= self.size and indices[row] > max(kept[kind]):
                continue
            kept[kind].append(indices[row])
            self.entries.append(
                {
                    "index": indices[row],
                    "clean": x[row].detach().float().cpu().clone(),
                    "adversarial": worst[row].detach().float().cpu().clone(),
                    "label": int(y[row]),
                    "clean_prediction": int(clean_prediction[row]),
                    "adversarial_prediction": int(adversarial_prediction[row]),
                    "broken": kind,
                }
            )
        self._prune()

    def _prune(self) -> None:
        unique = {e["index"]: e for e in self.entries}
        broken = sorted((e for e in unique.values() if e["broken"]), key=lambda e: e["index"])[: self.size]
        robust = sorted((e for e in unique.values() if not e["broken"]), key=lambda e: e["index"])[: self.size]
        self.entries = broken + robust

    def merge(self, others: Iterable["Gallery" | dict[str, Any]]) -> "Gallery":
        """This gallery with the candidates of ``others`` (galleries or their :meth:`to_state`) added."""
        for other in others:
            self.entries.extend(dict(e) for e in (other.entries if isinstance(other, Gallery) else _unpack(other)))
        self._prune()
        return self

    def chosen(self) -> list[dict[str, Any]]:
        """The samples shown: broken ones first, then robust ones, at most ``size``."""
        return self.entries[: self.size] if self.size > 0 else []

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
    return [
        {
            "clean": state["clean"][i].clone(),
            "adversarial": state["adversarial"][i].clone(),
            **{key: numbers[key][i] for key in _NUMBERS},
        }
        for i in range(len(numbers["index"]))
    ]
