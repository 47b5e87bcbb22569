"""Reading checkpoint files: safetensors, timm ``train.py`` checkpoints and bare state_dicts.

Never unpickles code: ``torch.load(weights_only=True)``, with timm's stored ``argparse.Namespace`` the one
class allowed (a plain attribute bag).
"""

from __future__ import annotations

import argparse
import pickle
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..errors import UserError, missing_file

TORCH_SUFFIXES = (".pt", ".pth", ".tar", ".bin", ".ckpt")


def _read_safetensors(path: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Tensors and the raw header metadata (str -> str, as safetensors stores it)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            raw_meta = fh.metadata() or {}
            state = {key: fh.get_tensor(key) for key in fh.keys()}
    except Exception as exc:  # safetensors raises several types for bad headers / short files
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(
            f"cannot read safetensors file {path} ({reason})", "the file is corrupt or truncated: re-export it"
        ) from None
    return state, dict(raw_meta)


def _read_torch(path: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    try:
        # timm's train.py stores its argparse.Namespace in the checkpoint; a Namespace is a
        # plain attribute bag (no code runs on load), so it is the one class we allow.
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise refused_pickle(path, exc) from None
    except Exception as exc:
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise UserError(
            f"cannot read checkpoint {path} ({reason})", "the file is corrupt or not a PyTorch checkpoint"
        ) from None
    meta: dict[str, Any] = {}
    if isinstance(obj, dict) and ("state_dict" in obj or "state_dict_ema" in obj):
        state = obj.get("state_dict") or obj.get("state_dict_ema")
        if isinstance(obj.get("arch"), str):
            meta["arch"] = obj["arch"]
        args = train_args(obj.get("args"))
        if args:
            meta["train_args"] = args
    elif isinstance(obj, dict) and obj and all(isinstance(v, Tensor) for v in obj.values()):
        state = obj
    else:
        raise UserError(
            f"checkpoint {path} is not a state_dict nor a timm train.py checkpoint",
            "save model.state_dict() or a dict with a 'state_dict' key",
        )
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise UserError(f"checkpoint {path} has a malformed state_dict", "save model.state_dict() again")
    return state, meta


ALLOWED = {"argparse.Namespace"}  # the one class torch.load is told it may rebuild
RESAVE = (
    "re-save only the weights where the model is defined: torch.save(model.state_dict(), 'model.pt'), "
    "or safetensors.torch.save_file(model.state_dict(), 'model.safetensors')"
)


def refused_globals(path: Path, exc: Exception) -> list[str]:
    """The ``module.name`` globals a pickled checkpoint would import, as far as they can be told without running it:
    the one torch refused (named in its message), else torch's own scan of the file.

    Args:
        path: the checkpoint.
        exc: what ``torch.load(weights_only=True)`` raised.
    """
    named = re.findall(r"GLOBAL (\S+) was not an allowed global", str(exc))
    if named:
        return named
    try:
        found = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception:  # noqa: BLE001 - a legacy or damaged file: the message says less, nothing more
        return []
    return [name for name in found if name not in ALLOWED]


def refused_pickle(path: Path, exc: Exception) -> UserError:
    """The one-line refusal of a checkpoint that needs code to load: which global it would import, and how to
    re-save it as plain weights.

    Args:
        path: the checkpoint.
        exc: what ``torch.load(weights_only=True)`` raised.
    """
    names = [(name if name.isprintable() else ascii(name)[1:-1])[:80] for name in refused_globals(path, exc)]
    what = (
        f"would import {names[0]}" + (f" (and {len(names) - 1} more)" if len(names) > 1 else "")
        if names
        else "holds pickled Python objects"
    )
    return UserError(
        f"refusing to load checkpoint {path}: it {what}, and hardenctl will not unpickle code (it could run anything)",
        RESAVE,
    )


TRAIN_ARGS = (
    "img_size",
    "input_size",
    "crop_pct",
    "interpolation",
    "mean",
    "std",
    "in_chans",
    "num_classes",
    "crop_mode",
)


def train_args(args: Any) -> dict[str, Any]:
    """The preprocessing settings a timm ``train.py`` checkpoint stores in its ``args`` (a Namespace or dict).

    Unset values (None, '') are dropped, so only what the training run declared is used.

    Args:
        args: the checkpoint's ``args`` entry.
    """
    values = vars(args) if isinstance(args, argparse.Namespace) else args if isinstance(args, dict) else {}
    return {key: values[key] for key in TRAIN_ARGS if values.get(key) not in (None, "", [], ())}


def read_raw(path: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Weights (wrapper prefixes removed) and the metadata exactly as the file stores it.

    Args:
        path: a ``.safetensors`` file or a torch checkpoint (never unpickled).
    """
    if not path.is_file():
        raise missing_file(path, "checkpoint")
    state, meta = _read_safetensors(path) if path.suffix == ".safetensors" else _read_torch(path)
    from timm.models import clean_state_dict  # timm's own rule for DDP's module. and torch.compile's _orig_mod.

    return clean_state_dict(state) if state else state, meta
