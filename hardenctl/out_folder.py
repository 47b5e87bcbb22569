"""``harden --out``: checked before any model is loaded, and held by one run at a time (no torch here: the CLI checks
it before importing anything heavy).

Why here and early: a folder that cannot take the outputs (a file in its place, a read-only parent, a ``README.md``
that is a folder) used to be found after a whole training run, and two runs into one folder both said they saved while
one result was lost. Now every path the run will write is checked first, a folder holding someone else's files is
refused unless ``--overwrite``, and :class:`~hardenctl.files.FolderLock` keeps a second run out while one writes.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import UserError
from .files import LOCK_NAME, check_output_dir, check_output_file, folder_in_use

CHECKPOINT_DIR = "checkpoints"  # one epoch_NNNN.pt per finished epoch (hardenctl.training.checkpoints)

# every name a harden run writes into --out (the checkpoints folder holds epoch_NNNN.pt files)
OUTPUT_FILES = (
    "model.safetensors",
    "config.json",
    "README.md",
    "recipe.yaml",
    "report.json",
    "report.md",
    "train_log.jsonl",
)


def holds_run(out_dir: Path) -> bool:
    """Whether ``out_dir`` holds a harden run: a checkpoint, or a saved model."""
    return any((out_dir / CHECKPOINT_DIR).glob("epoch_*.pt")) or (out_dir / "model.safetensors").is_file()


def foreign_files(out_dir: Path) -> list[str]:
    """Names in ``out_dir`` that no harden run writes (a user's own files), sorted."""
    ours = {*OUTPUT_FILES, CHECKPOINT_DIR, LOCK_NAME}
    return sorted(p.name for p in out_dir.iterdir() if p.name not in ours) if out_dir.is_dir() else []


def check_out_dir(out_dir: Path, resume: bool, overwrite: bool = False) -> None:
    """Refuse, before any work, an ``--out`` this run could not write, one in use, or one holding other files.

    Under torchrun every rank refuses the same folders, but only rank 0 asks whether the folder is in use: rank 0
    holds its lock for the run, and another rank that checks after rank 0 took it must not take it for a stranger's.
    """
    out_dir = Path(out_dir)
    if resume and overwrite:
        raise UserError("--resume continues the run in --out and --overwrite replaces it", "give one of them")
    check_output_dir(out_dir, "--out")
    for name in OUTPUT_FILES:
        check_output_file(out_dir / name, "--out")
    if (out_dir / CHECKPOINT_DIR).exists() and not (out_dir / CHECKPOINT_DIR).is_dir():
        raise UserError(f"--out {out_dir}: {CHECKPOINT_DIR} is a file", "remove it, or pass another --out")
    holder = folder_in_use(out_dir) if os.environ.get("RANK", "0") == "0" else None
    if holder is not None:
        raise UserError(
            f"--out {out_dir} is in use by another hardenctl run ({holder})",
            "wait for it to finish, or pass another --out",
        )
    if not out_dir.is_dir() or overwrite:
        return
    if holds_run(out_dir):
        if not resume:
            raise UserError(
                f"--out {out_dir} already holds a harden run",
                "pass --resume to continue it, --overwrite to replace it, or a new --out directory",
            )
        return
    others = foreign_files(out_dir)
    if others:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        raise UserError(
            f"--out {out_dir} holds files hardenctl did not write ({shown})",
            "pass a new or empty --out, or --overwrite to write into it (files of the same names are replaced)",
        )


def clear_previous_run(out_dir: Path) -> None:
    """``--overwrite`` over an earlier run: its checkpoints go, so a later ``--resume`` cannot pick up the old run's."""
    for path in sorted((Path(out_dir) / CHECKPOINT_DIR).glob("epoch_*.pt")):
        path.unlink()
