"""``--resume-dir``: an evaluation's state, saved atomically after every finished batch, so a killed run resumes.

Each process keeps its own file, ``state-rank{R}-of{N}.pt``: the batch results it is responsible for (per-sample
rows plus that batch's share of the attack bookkeeping, see :class:`~hardenctl.evaluation.suite.BatchResult`), for
every stage (the main suite, each ε of a sweep, the ε = 0.5 check), the pictures' candidates and the buffers seen
changed. A batch is seeded by its start, so a resumed run that reruns only the unfinished batches ends with the
same report and per-sample results as an uninterrupted one. A resumed run reads *every* state file of the
directory and takes the union of their finished batches, so it may also use another number of processes.

The state is keyed on what determines the results (model and data sha256, threat model, attacks and budgets, seed,
batch size, EOT draws, ...): a state written by another evaluation is refused (exit 2), naming the first difference.
Files are written with ``torch.save`` (plain tensors, numbers and lists; each stage's batches packed into one tensor
per field) and read back with ``weights_only=True``.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn

from ..attacks import AttackWork, GradientStats
from ..errors import UserError
from ..files import atomic_path
from .suite import BatchResult

STATE_FORMAT = "hardenctl-eval-state"
STATE_VERSION = 1
_NAME = re.compile(r"state-rank(\d+)-of(\d+)\.pt")


def state_files(directory: str | Path) -> list[Path]:
    """The state files in ``directory`` (one per process of each run that wrote there), in name order."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if _NAME.fullmatch(p.name))


def model_digest(model: nn.Module) -> str:
    """sha256 of a model's parameters and buffers (for a model that came from no file)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode() + str(tuple(tensor.shape)).encode() + str(tensor.dtype).encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def first_difference(saved: dict[str, Any], current: dict[str, Any]) -> str | None:
    """``seed: 1 in the state, 0 now`` for the first key whose value differs; None when they agree."""
    for name in list(current) + [k for k in saved if k not in current]:
        if saved.get(name) != current.get(name):
            return f"{name}: {_short(saved.get(name))} in the state, {_short(current.get(name))} now"
    return None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


_ROWS = ("clean_correct", "clean_prediction", "robust", "robust_prediction", "broken_by")


def pack(batches: Iterable[BatchResult]) -> dict[str, torch.Tensor]:
    """One stage's batches as a few tensors (one per field): saving many small tensors costs 3x more."""
    batches = list(batches)
    if not batches:
        return {}
    packed = {name: torch.cat([getattr(b, name) for b in batches]) for name in _ROWS}
    packed.update(
        number=torch.tensor([b.number for b in batches]),
        start=torch.tensor([b.start for b in batches]),
        length=torch.tensor([len(b) for b in batches]),
        after_attack=torch.tensor([b.after_attack for b in batches]),
        gradient_stats=torch.tensor(
            [[[s.points, s.zero, s.nonfinite, s.flat] for s in b.gradient_stats] for b in batches]
        ),
        bound_violations=torch.tensor([b.bound_violations for b in batches]),
        max_linf=torch.tensor([b.max_linf for b in batches], dtype=torch.float64),  # python floats, kept exactly
        max_l2=torch.tensor([b.max_l2 for b in batches], dtype=torch.float64),
    )
    if all(len(b.work) == len(b.after_attack) for b in batches):
        packed["work"] = torch.tensor(
            [[[w.seconds, w.forward, w.backward, w.attacked, w.broken] for w in b.work] for b in batches],
            dtype=torch.float64,
        )
    return packed


def unpack(packed: dict[str, torch.Tensor]) -> list[BatchResult]:
    if not packed:
        return []
    lengths = packed["length"].tolist()
    rows = {name: torch.split(packed[name], lengths) for name in _ROWS}
    works = packed["work"].tolist() if "work" in packed else [[] for _ in lengths]  # states saved before work was kept
    return [
        BatchResult(
            number,
            start,
            *(rows[name][i].clone() for name in _ROWS),
            after_attack=after,
            gradient_stats=[GradientStats(*counts) for counts in stats],
            bound_violations=violations,
            max_linf=linf,
            max_l2=l2,
            work=[AttackWork(seconds, int(f), int(b), int(a), int(k)) for seconds, f, b, a, k in work],
        )
        for i, (number, start, after, stats, violations, linf, l2, work) in enumerate(
            zip(
                packed["number"].tolist(),
                packed["start"].tolist(),
                packed["after_attack"].tolist(),
                packed["gradient_stats"].tolist(),
                packed["bound_violations"].tolist(),
                packed["max_linf"].tolist(),
                packed["max_l2"].tolist(),
                works,
            )
        )
    ]


def read_state(path: str | Path) -> dict[str, Any]:
    """One state file, checked to be one (never unpickled: ``weights_only``)."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated or foreign file: torch raises many kinds
        raise UserError(
            f"{path} is not a hardenctl evaluation state ({type(exc).__name__})",
            "remove it, or pass another --resume-dir",
        ) from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise UserError(f"{path} is not a hardenctl evaluation state", "remove it, or pass another --resume-dir")
    if state.get("version") != STATE_VERSION:
        raise UserError(
            f"{path} is a version {state.get('version')} evaluation state; "
            f"this hardenctl reads version {STATE_VERSION}",
            "rerun without --resume into an empty --resume-dir",
        )
    return state


class EvalState:
    """This process's evaluation state in ``directory``: the batches it answers for, saved after each one."""

    def __init__(self, directory: str | Path, key: dict[str, Any], rank: int = 0, world_size: int = 1):
        self.directory, self.key = Path(directory), dict(key)
        self.rank, self.world_size = rank, world_size
        self.path = self.directory / f"state-rank{rank}-of{world_size}.pt"
        self.stages: dict[str, dict[int, BatchResult]] = {}  # finished batches, by stage and batch number
        self.loaded: dict[str, dict[int, BatchResult]] = {}  # ... found in the directory's files when resuming
        self.extras: list[dict[str, Any]] = []  # each loaded file's "extra" (pictures' candidates, buffer changes)
        self.resumed_batches = 0

    @classmethod
    def open(
        cls, directory: str | Path, key: dict[str, Any], resume: bool, rank: int = 0, world_size: int = 1
    ) -> "EvalState":
        """Refuse a directory holding another run's state (or any state without ``resume``); load what is there."""
        directory = Path(directory)
        if directory.exists() and not directory.is_dir():
            raise UserError(f"--resume-dir {directory} is a file", "pass a directory")
        files = state_files(directory)
        if files and not resume:
            raise UserError(
                f"--resume-dir {directory} already holds an evaluation state",
                "pass --resume to continue it, or an empty --resume-dir",
            )
        state = cls(directory, key, rank, world_size)
        for path in files:
            saved = read_state(path)
            difference = first_difference(saved.get("key", {}), state.key)
            if difference is not None:
                raise UserError(
                    f"{path} is the state of another evaluation ({difference})",
                    "resume with the same model, data and settings, or pass another --resume-dir",
                )
            for stage, packed in saved.get("stages", {}).items():
                found = state.loaded.setdefault(stage, {})
                for batch in unpack(packed):
                    found.setdefault(batch.number, batch)
            state.extras.append(saved.get("extra", {}))
        state.resumed_batches = sum(len(b) for b in state.loaded.values())
        return state

    def carried(self, stage: str, numbers: Iterable[int]) -> list[BatchResult]:
        """The batches among ``numbers`` an earlier run finished; they become this process's to keep."""
        found = self.loaded.get(stage, {})
        carried = [found[b] for b in numbers if b in found]
        own = self.stages.setdefault(stage, {})
        for batch in carried:
            own[batch.number] = batch
        return carried

    def record(self, stage: str, batch: BatchResult) -> None:
        self.stages.setdefault(stage, {})[batch.number] = batch

    def save(self, extra: dict[str, Any] | None = None) -> None:
        """Replace this process's file atomically (a kill leaves the previous state or this one, never half)."""
        state = {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "key": self.key,
            "rank": self.rank,
            "world_size": self.world_size,
            "extra": extra or {},
            "stages": {stage: pack(batches[b] for b in sorted(batches)) for stage, batches in self.stages.items()},
        }
        with atomic_path(self.path) as tmp:
            torch.save(state, tmp)


def batch_numbers(path: str | Path) -> dict[str, list[int]]:
    """The finished batches of one state file, per stage."""
    return {
        stage: packed["number"].tolist() if packed else []
        for stage, packed in read_state(path).get("stages", {}).items()
    }
