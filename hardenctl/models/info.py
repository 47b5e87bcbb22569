"""What ``hardenctl info`` shows: architecture, input and data config, normalisation, parameters, inserted modules."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from torch import nn

from ..options import ModelOptions
from .fsr import fsr_inserted, fsr_stages
from .load import load_model


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def describe_model(path: str | Path, options: ModelOptions | None = None) -> dict[str, Any]:
    """What ``hardenctl info`` shows: architecture, input, normalisation, parameters, inserted modules, recipe.

    Args:
        path: the model (any form :func:`hardenctl.models.load_model` reads).
        options: what the file may not say (``arch``, ``num_classes``, ...).
    """
    model = load_model(path, options)
    info, net = model.info, model.model
    inserted = []
    for stage, module in fsr_inserted(net).items():
        inserted.append(
            {
                "kind": "fsr",
                "stage": stage,
                "channels": module.channels,
                "hidden": module.hidden,
                "tau": module.tau,
                "parameters": _count(module),
                "parts": {
                    "separation": _count(module.separation),
                    "recalibration": _count(module.recalibration),
                    "aux_head": _count(module.head),
                },
            }
        )
    purifier = getattr(model, "purifier", None)  # an AToP composite: the purifier in front of the network
    if purifier is not None:
        transform = model.transform.config.to_dict()
        inserted.append(
            {
                "kind": "atop purifier",
                "stage": "input (before the network)",
                "parameters": _count(purifier),
                "transform": transform,
                "width": purifier.width,
                "depth": purifier.depth,
            }
        )
    added = sum(item["parameters"] for item in inserted)
    total = _count(net) + (_count(purifier) if purifier is not None else 0)
    metadata = dict(info.metadata)
    metadata.pop("fsr", None)
    metadata.pop("atop", None)
    return {
        "path": info.path,
        "sha256": info.sha256,
        "arch": info.arch,
        "num_classes": info.num_classes,
        "in_chans": info.in_chans,
        "input_size": list(info.input_size) if info.input_size else None,
        "input_size_source": info.input_size_source,
        "normalization": {"mean": list(info.mean), "std": list(info.std), "source": info.normalization_source},
        "data_config": info.data_config.to_dict() if info.data_config is not None else None,
        "label_names": info.label_names,
        "randomized": info.randomized,
        "parameters": {"total": total, "backbone": total - added, "inserted": added},
        "stages": fsr_stages(net),
        "inserted_modules": inserted,
        "recipe": metadata or None,
    }


def describe_lines(description: Mapping[str, Any]) -> list[str]:
    """:func:`describe_model`'s dict as plain text lines (for the CLI's console output).

    Args:
        description: what :func:`describe_model` returned.
    """
    d = description
    params = d["parameters"]
    size = "x".join(str(v) for v in d["input_size"]) if d["input_size"] else "not declared"
    norm = d["normalization"]
    lines = [
        f"architecture: {d['arch']} ({d['num_classes']} classes, {d['in_chans']} input channels)",
        f"input size: {size}" + (f" (from {d['input_size_source']})" if d["input_size"] else ""),
        f"normalisation: mean {norm['mean']}, std {norm['std']} (from {norm['source']})",
        *_data_config_lines(d.get("data_config")),
        f"parameters: {params['total']:,} ({params['backbone']:,} backbone + {params['inserted']:,} inserted)",
        f"feature stages: {', '.join(d['stages']) or 'none'}",
    ]
    if d["inserted_modules"]:
        lines.append("inserted modules:")
        for m in d["inserted_modules"]:
            if m["kind"] == "atop purifier":
                t = m["transform"]
                lines.append(
                    f"  AToP purifier at the input: U-Net width {m['width']}, depth {m['depth']}, "
                    f"{m['parameters']:,} parameters; "
                    f"random transform {', '.join(f'{k} {v}' for k, v in t.items())} (randomised: evaluated with EOT)"
                )
                continue
            parts = ", ".join(f"{k} {v:,}" for k, v in m["parts"].items())
            lines.append(
                f"  {m['kind']} after {m['stage']}: {m['channels']} channels, hidden {m['hidden']}, tau {m['tau']:g}, "
                f"{m['parameters']:,} parameters ({parts})"
            )
    else:
        lines.append("inserted modules: none")
    recipe = d.get("recipe") or {}
    if recipe.get("recipe"):
        when = f" (epoch {recipe['epoch']}, {recipe.get('selected')})" if recipe.get("epoch") else ""
        lines.append(f"trained with: {recipe['recipe']}{when}")
    return lines


def _data_config_lines(config: Mapping[str, Any] | None) -> list[str]:
    if not config:
        return []
    sources = config.get("sources", {})
    crop = (
        config["crop_pct"]
        if config["crop_pct"] is not None
        else f"undeclared (photos: {config['effective_crop_pct']}; arrays at the input size: uncropped)"
    )
    return [
        f"preprocessing: {config['interpolation']} (from {sources.get('interpolation', 'default')}), crop_pct {crop}, "
        f"crop_mode {config['crop_mode']}"
    ]
