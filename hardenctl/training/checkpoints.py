"""Atomic per-epoch checkpoints, the run key that refuses to resume another run, the log."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..distributed import Distributed
from ..errors import UserError
from ..files import atomic_write
from ..out_folder import CHECKPOINT_DIR
from ..recipes import Recipe


def checkpoint_path(out_dir: Path, epoch: int) -> Path:
    """Where the checkpoint of ``epoch`` lives (zero-padded, so the names sort by epoch).

    Args:
        out_dir: the run's folder.
        epoch: the epoch (1-based).
    """
    return Path(out_dir) / CHECKPOINT_DIR / f"epoch_{epoch:04d}.pt"


def latest_checkpoint(out_dir: Path) -> Path | None:
    """The checkpoint of the last finished epoch in ``out_dir``, or None.

    Args:
        out_dir: the run's folder.
    """
    files = sorted((Path(out_dir) / CHECKPOINT_DIR).glob("epoch_*.pt"))
    return files[-1] if files else None


def read_checkpoint_state(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """A checkpoint's contents, tensors only (never unpickled code); an unreadable one is a one-line error.

    Args:
        path: the checkpoint file.
        device: where its tensors go.
    """
    try:
        return torch.load(str(path), map_location=device, weights_only=True)
    except Exception as exc:
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise UserError(
            f"cannot read training checkpoint {path} ({reason})", "delete it to resume from the epoch before"
        ) from None


def resume_point(out_dir: Path, resume: bool, dist: Distributed) -> Path | None:
    """The checkpoint a ``--resume`` run continues from, as rank 0 sees it, on every process: only rank 0 writes
    checkpoints, so across machines without a shared ``--out`` only its disk has them (another rank resuming from its
    own empty one would start again at epoch 1 while rank 0 goes on).

    Args:
        out_dir: the run's folder.
        resume: whether the run was asked to resume (``--resume``).
        dist: the processes.
    """
    return dist.broadcast(latest_checkpoint(out_dir) if resume and dist.is_main else None)


def read_on_main(path: Path | None, dist: Distributed, device: torch.device | str = "cpu") -> dict[str, Any] | None:
    """Rank 0's checkpoint at ``path`` on every process (see :func:`resume_point`); one process reads it itself.

    Args:
        path: the checkpoint (None: nothing to read, None returned).
        dist: the processes.
        device: where its tensors go (one process; several get CPU tensors).
    """
    if dist.world_size == 1:
        return None if path is None else read_checkpoint_state(path, device)
    return dist.broadcast(read_checkpoint_state(path) if dist.is_main and path is not None else None)  # CPU tensors


def run_key(recipe: Recipe, seed: int, input_sha256: str | None, train_sha256: str) -> dict[str, Any]:
    """What a checkpoint must share with the run that resumes it: recipe, every config value, seed, input and data.

    Args:
        recipe: the resolved recipe.
        seed: the run's seed.
        input_sha256: the input model's sha256 (None: unknown).
        train_sha256: the training data's identity (sha256, or a streamed folder's fingerprint).
    """
    return {
        "recipe": recipe.name,
        "config": recipe.config.to_dict(),
        "seed": seed,
        "input_sha256": input_sha256,
        "train_data_sha256": train_sha256,
    }


def check_resume_key(saved: dict[str, Any], current: dict[str, Any], path: Path) -> None:
    """Refuse to resume ``path`` into a run that differs, naming every difference (one line, exit 2).

    Args:
        saved: the checkpoint's run key.
        current: this run's key.
        path: the checkpoint (named in the error).
    """
    differs = [k for k in current if saved.get(k) != current[k]]
    if "config" in differs:
        differs.remove("config")
        differs += [f"config.{k}" for k in current["config"] if saved["config"].get(k) != current["config"][k]]
    if differs:
        raise UserError(
            f"cannot resume from {path}: this run differs in {', '.join(differs)}",
            "resume with the same checkpoint, data, recipe, --set values and --seed, or use a new --out",
        )


@dataclass
class TrainResult:
    """What ``train`` returns: every epoch's record, the best and last epochs, the lr sweep."""

    history: list[dict[str, Any]]
    best_epoch: int  # 1-based
    last_epoch: int
    lr_sweep: Any = None  # the SweepResult of lr: auto (None when the lr was a number)


def write_train_log(path: Path, history: list[dict[str, Any]]) -> None:
    """Write ``train_log.jsonl`` (one JSON record per epoch) atomically, so a killed run leaves a whole log.

    Args:
        path: the log file.
        history: the epoch records.
    """
    atomic_write(path, "".join(json.dumps(record) + "\n" for record in history))
