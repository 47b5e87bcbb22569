"""Saving a model: ``model.safetensors`` with hardenctl's metadata (header keys sorted, so the same weights and
settings give the same bytes) and the ``config.json`` that makes the folder a timm model folder."""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path
from typing import Any

import timm
from torch import nn

from ..files import atomic_path
from ..version import __version__
from .classifier import ImageClassifier
from .data_config import build_data_config
from .sources import UNDECLARED


def save_model(model: ImageClassifier, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write weights + metadata to ``.safetensors`` atomically.

    Keys are the bare timm keys, so ``timm.create_model(arch, num_classes=N,
    checkpoint_path=path)`` loads the file as well as ``hardenctl eval`` does. A composite
    (AToP's purifier in front of the network) adds its own tensors under their own prefix.

    Args:
        model: the wrapped classifier (its :class:`ModelInfo` becomes the metadata).
        path: the ``.safetensors`` file to write.
        extra: entries added to the ``hardenctl`` metadata section (recipe, settings, ...).
    """
    from safetensors.torch import save_file

    info = model.info
    if info is None:
        raise ValueError("model has no ModelInfo; build it with load_model or wrap_model")
    tensors = dict(model.model.state_dict())
    extra_tensors = getattr(
        model, "extra_tensors", None
    )  # a composite's own modules (AToP's purifier), under their prefix
    if extra_tensors is not None:
        added = extra_tensors()
        if set(added) & set(tensors):
            raise ValueError(f"tensor names clash with the network's: {sorted(set(added) & set(tensors))[:3]}")
        tensors.update(added)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    meta: dict[str, Any] = {
        "format": "hardenctl",
        "hardenctl_version": __version__,
        "arch": info.arch,
        "num_classes": info.num_classes,
        "in_chans": info.in_chans,
        "mean": list(info.mean),
        "std": list(info.std),
        "randomized": info.randomized,
        "hardenctl": {**info.metadata, **(extra or {})},
    }
    if info.input_size:
        meta["input_size"] = list(info.input_size)
    config = info.data_config
    if (
        config is not None
    ):  # what timm's eval transform needs; crop_pct only when declared (else images at size stay uncropped)
        meta.update({"interpolation": config.interpolation, "crop_mode": config.crop_mode})
        if config.crop_pct is not None:
            meta["crop_pct"] = config.crop_pct
    if info.label_names:
        meta["label_names"] = list(info.label_names)
    header = {k: (v if isinstance(v, str) else json.dumps(v, sort_keys=True)) for k, v in meta.items()}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=header)
        sort_safetensors_header(tmp)
    return path


def sort_safetensors_header(path: Path) -> None:
    """Rewrite a safetensors file's JSON header with its keys sorted, so that the same weights and settings give the
    same bytes (and the same ``model_sha256``).

    safetensors' writer keeps ``__metadata__`` in a Rust hash map, whose order changes from one save to the next. The
    header is written again sorted and compact, padded with spaces to a multiple of 8 bytes as safetensors pads it;
    tensor offsets count from the end of the header, so they stay valid. Same length (the usual case): rewritten in
    place; otherwise the data is copied behind the new header.

    Args:
        path: the file, rewritten in place or copied behind a new header.
    """
    with open(path, "r+b") as fh:
        (size,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(size))
        text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        text += b" " * (-len(text) % 8)
        if len(text) == size:
            fh.seek(8)
            fh.write(text)
            return
    moved = path.with_name(path.name + ".sorting")
    with open(path, "rb") as source, open(moved, "wb") as target:
        target.write(struct.pack("<Q", len(text)) + text)
        source.seek(8 + size)
        shutil.copyfileobj(source, target, 1 << 24)
    os.replace(moved, path)


def timm_model_args(net: nn.Module, in_chans: int, num_classes: int) -> dict[str, Any]:
    """What timm's constructor needs to rebuild ``net`` (``config.json``'s ``model_args``): timm's own record of the
    arguments it was built with (``img_size`` for a ViT built at another size), kept where JSON can carry it.

    Args:
        net: the timm network.
        in_chans: its input channels.
        num_classes: classes of its head.
    """
    recorded = getattr(timm.models, "get_model_args", None)
    args = dict(recorded(net)) if recorded is not None else {}
    args.update(in_chans=in_chans, num_classes=num_classes)
    kept = {}
    for key, value in args.items():
        try:
            kept[key] = json.loads(json.dumps(value))  # tuples become lists; a class or callable cannot travel
        except (TypeError, ValueError):
            continue
    return kept


def write_config_json(model: ImageClassifier, folder: str | Path) -> Path:
    """``config.json`` beside ``model.safetensors``: the folder is then a timm model folder, and plain timm
    (``create_model('local-dir:DIR', pretrained=True)``, ``resolve_model_data_config``, ``create_transform``)
    builds the same network and prepares photos as ``hardenctl eval DIR`` does, when the architecture is
    unchanged. Everything timm would otherwise fill with its own defaults is written out (``model_args`` with
    ``img_size``, the ``crop_pct`` and ``input_size`` hardenctl uses); values written only for timm are listed
    under ``hardenctl_undeclared`` so hardenctl keeps treating them as undeclared.

    Args:
        model: the wrapped classifier.
        folder: the folder holding (or about to hold) ``model.safetensors``.
    """
    info = model.info
    if info is None:
        raise ValueError("model has no ModelInfo; build it with load_model or wrap_model")
    config = info.data_config or build_data_config(
        [("python", {"input_size": info.input_size, "mean": info.mean, "std": info.std})],
        {},
        getattr(model.model, "pretrained_cfg", None) or {},
        info.arch,
    )
    cfg, undeclared = config.timm_cfg(info.in_chans)
    pretrained_cfg = {**cfg, "num_classes": info.num_classes}
    content: dict[str, Any] = {
        "architecture": info.arch,
        "num_classes": info.num_classes,
        "num_features": getattr(model.model, "num_features", None),
        "pretrained_cfg": pretrained_cfg,
        "model_args": timm_model_args(model.model, info.in_chans, info.num_classes),
    }
    if undeclared:
        content[UNDECLARED] = {key: cfg[key] for key in undeclared}
    if info.label_names:
        content["label_names"] = list(info.label_names)
    path = Path(folder) / "config.json"
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")
    return path
