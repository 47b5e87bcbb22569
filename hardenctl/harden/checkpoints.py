"""Atomic per-epoch checkpoints, the run key that refuses to resume another run, epoch selection, the log."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import torch

from ..errors import UserError
from ..files import atomic_write
from ..recipes import Recipe

CHECKPOINT_DIR = "checkpoints"


def checkpoint_path(out_dir: Path, epoch: int) -> Path:
    return Path(out_dir) / CHECKPOINT_DIR / f"epoch_{epoch:04d}.pt"


def latest_checkpoint(out_dir: Path) -> Path | None:
    files = sorted((Path(out_dir) / CHECKPOINT_DIR).glob("epoch_*.pt"))
    return files[-1] if files else None


def read_checkpoint_state(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    try:
        return torch.load(str(path), map_location=device, weights_only=True)
    except Exception as exc:
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise UserError(f"cannot read training checkpoint {path} ({reason})", "delete it to resume from the epoch before") from None


def _run_key(recipe: Recipe, seed: int, input_sha256: str | None, train_sha256: str) -> dict[str, Any]:
    return {"recipe": recipe.name, "config": recipe.config.to_dict(), "seed": seed,
            "input_sha256": input_sha256, "train_data_sha256": train_sha256}


def _check_resume_key(saved: dict[str, Any], current: dict[str, Any], path: Path) -> None:
    differs = [k for k in current if saved.get(k) != current[k]]
    if "config" in differs:
        differs.remove("config")
        differs += [f"config.{k}" for k in current["config"] if saved["config"].get(k) != current["config"][k]]
    if differs:
        raise UserError(f"cannot resume from {path}: this run differs in {', '.join(differs)}",
                        "resume with the same checkpoint, data, recipe, --set values and --seed, or use a new --out")


@dataclass
class TrainResult:
    history: list[dict[str, Any]]
    best_epoch: int  # 1-based
    last_epoch: int


def select_best(history: list[dict[str, Any]], by: str = "robust", epochs: Iterable[int] | None = None) -> int:
    """The epoch (1-based) with the highest held-out ``by`` accuracy (robust or clean; ties: the other, then later).

    Only ``epochs`` (default: all) compete (:meth:`Recipe.selectable_epochs`); with none of them scored, the last epoch.
    """
    other = "clean" if by == "robust" else "robust"
    allowed = set(epochs) if epochs is not None else None
    scored = [(h[f"holdout_{by}_accuracy"], h[f"holdout_{other}_accuracy"] or 0.0, h["epoch"]) for h in history
              if h.get(f"holdout_{by}_accuracy") is not None and (allowed is None or h["epoch"] in allowed)]
    return max(scored)[2] if scored else history[-1]["epoch"]


def write_train_log(path: Path, history: list[dict[str, Any]]) -> None:
    atomic_write(path, "".join(json.dumps(record) + "\n" for record in history))
