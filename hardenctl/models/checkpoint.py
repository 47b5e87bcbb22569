"""Reading checkpoint files: safetensors, timm ``train.py`` checkpoints and bare state_dicts.

Never unpickles code: ``torch.load(weights_only=True)``, with timm's stored ``argparse.Namespace`` the one


class allowed (a plain attribute bag).
"""
from __future__ import annotations

import argparse
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..errors import UserError, missing_file
from .metadata import decode_value

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
        raise UserError(f"cannot read safetensors file {path} ({reason})", "the file is corrupt or truncated: re-export it") from None
    return state, dict(raw_meta)


def _read_torch(path: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    try:
        # timm's train.py stores its argparse.Namespace in the checkpoint; a Namespace is a
        # plain attribute bag (no code runs on load), so it is the one class we allow.
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = str(exc).split("\n")[0][:160]
        raise UserError(
            f"checkpoint {path} contains pickled Python objects that hardenctl will not unpickle ({detail})",
            "re-save only the weights: torch.save(model.state_dict(), path), or export to .safetensors",
        ) from None
    except Exception as exc:
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise UserError(f"cannot read checkpoint {path} ({reason})", "the file is corrupt or not a PyTorch checkpoint") from None
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


TRAIN_ARGS = ("img_size", "input_size", "crop_pct", "interpolation", "mean", "std", "in_chans", "num_classes", "crop_mode")


def train_args(args: Any) -> dict[str, Any]:
    """The preprocessing settings a timm ``train.py`` checkpoint stores in its ``args`` (a Namespace or dict).

    Unset values (None, '') are dropped, so only what the training run declared is used.
    """
    values = vars(args) if isinstance(args, argparse.Namespace) else args if isinstance(args, dict) else {}
    return {key: values[key] for key in TRAIN_ARGS if values.get(key) not in (None, "", [], ())}


def read_raw(path: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Weights (wrapper prefixes removed) and the metadata exactly as the file stores it."""
    if not path.is_file():
        raise missing_file(path, "checkpoint")
    state, meta = _read_safetensors(path) if path.suffix == ".safetensors" else _read_torch(path)
    for prefix in ("module.", "_orig_mod."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state, meta


def read_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Weights and metadata of a checkpoint, prefixes from DDP/compile wrappers removed.

    Metadata values that are JSON are decoded, the rest stay strings; nothing is validated
    here (:func:`parse_metadata` does that for the keys hardenctl uses).
    """
    state, raw = read_raw(Path(path))
    return state, {key: decode_value(value) for key, value in raw.items()}
