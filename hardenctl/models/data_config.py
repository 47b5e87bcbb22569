"""The data config that travels with a model: how its images must be prepared, and where each value came from.

A robust-accuracy number measures the model that ships only if the images reach it as they did in
training: timm resizes the short side to ``size / crop_pct`` and centre-crops with the model's
interpolation. One :class:`DataConfig` per model, resolved once from (in order) hardenctl's own
metadata, the args a timm ``train.py`` checkpoint stores, a model folder's ``pretrained_cfg``; flags
override any of them (recorded as such); with nothing declared, data whose images share one size is
used at that size, and otherwise the architecture's timm ``pretrained_cfg`` is named as the source.
No torch here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from ..errors import UserError

INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "lanczos", "box", "hamming", "random")
CROP_MODES = ("center", "squash", "border")
FIELDS = ("input_size", "interpolation", "crop_pct", "crop_mode", "mean", "std")
DEFAULT_CROP_PCT = 0.875  # timm's DEFAULT_CROP_PCT: what timm uses when nothing says otherwise


@dataclass
class DataConfig:
    """``input_size`` is (H, W); ``crop_pct`` None means "not declared" (images at the input size pass as
    they are; others are resized with the architecture's default). ``sources`` maps each field to where it
    came from: ``checkpoint``, ``train.py args``, ``config.json``, ``cli``, ``cli (overrides <source>)``,
    ``data``, ``timm pretrained_cfg of <arch>``."""

    input_size: tuple[int, int] | None = None
    interpolation: str = "bilinear"
    crop_pct: float | None = None
    crop_mode: str = "center"
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
    sources: dict[str, str] = field(default_factory=dict)
    default_crop_pct: float = DEFAULT_CROP_PCT  # used for images of another size when crop_pct is undeclared
    default_input_size: tuple[int, int] | None = None  # the architecture's own size: for photos of mixed sizes, undeclared
    default_source: str = "timm default"  # what the two defaults are named in reports

    @property
    def crop_declared(self) -> bool:
        return self.crop_pct is not None

    @property
    def effective_crop_pct(self) -> float:
        return self.crop_pct if self.crop_pct is not None else self.default_crop_pct

    def to_dict(self) -> dict[str, Any]:
        """For reports and metadata: the values, the crop_pct actually used, and each value's source."""
        return {"input_size": list(self.input_size) if self.input_size else None, "interpolation": self.interpolation,
                "crop_pct": self.crop_pct, "crop_mode": self.crop_mode, "mean": list(self.mean), "std": list(self.std),
                "effective_crop_pct": self.effective_crop_pct, "sources": dict(self.sources)}

    def pretrained_cfg(self, in_chans: int) -> dict[str, Any]:
        """The timm ``pretrained_cfg`` keys this config sets (what ``config.json`` carries). Without a declared
        ``crop_pct`` timm uses its default (0.875) for images of other sizes, as hardenctl's undeclared config
        uses the architecture's; a 32×32 CIFAR model then still evaluates 32×32 images uncropped."""
        cfg: dict[str, Any] = {"interpolation": self.interpolation, "crop_mode": self.crop_mode,
                               "mean": list(self.mean), "std": list(self.std)}
        if self.crop_pct is not None:  # undeclared stays undeclared: images at the input size then pass uncropped
            cfg["crop_pct"] = self.crop_pct
        if self.input_size:
            cfg["input_size"] = [in_chans, *self.input_size]
        return cfg


def check_crop_pct(value: float, where: str = "--crop-pct") -> float:
    if not (0 < float(value) <= 1):
        raise UserError(f"{where} must be in (0, 1], got {value}", "pass e.g. --crop-pct 0.875 (1.0: no crop)")
    return float(value)


def check_interpolation(value: str, where: str = "--interpolation") -> str:
    if value not in INTERPOLATIONS:
        raise UserError(f"{where}: unknown interpolation {value!r}", f"use one of {', '.join(INTERPOLATIONS)}")
    return value


def check_crop_mode(value: str, where: str = "--crop-mode") -> str:
    if value not in CROP_MODES:
        raise UserError(f"{where}: unknown crop mode {value!r}", f"use one of {', '.join(CROP_MODES)}")
    return value


def _size(value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, int):
        return (value, value)
    values = tuple(int(v) for v in value)
    return values[-2:] if len(values) >= 2 else (values[0], values[0])


def resolve_data_config(declared: list[tuple[str, Mapping[str, Any]]], flags: Mapping[str, Any],
                        arch_cfg: Mapping[str, Any], arch: str) -> DataConfig:
    """One data config from declared layers (``[(source, values), ...]``, first wins), flags on top, the
    architecture's timm ``pretrained_cfg`` for mean/std/interpolation/crop_mode left undeclared.

    ``input_size`` and ``crop_pct`` stay None when nobody declared them: the caller decides with the data
    (one shared image size → that size, uncropped; otherwise the architecture's default, named as such).
    """
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for source, layer in declared:
        for key in FIELDS:
            if key not in values and layer.get(key) is not None:
                values[key], sources[key] = layer[key], source
    for key in FIELDS:
        if flags.get(key) is not None:
            sources[key] = f"cli (overrides {sources[key]})" if key in sources else "cli"
            values[key] = flags[key]
    arch_source = f"timm pretrained_cfg of {arch}"
    for key in ("interpolation", "crop_mode", "mean", "std"):
        if key not in values and arch_cfg.get(key) is not None:
            values[key], sources[key] = arch_cfg[key], arch_source
    config = DataConfig(
        input_size=_size(values.get("input_size")),
        interpolation=check_interpolation(str(values.get("interpolation", "bilinear")), "interpolation"),
        crop_pct=check_crop_pct(values["crop_pct"], f"crop_pct (from {sources['crop_pct']})") if values.get("crop_pct") is not None else None,
        crop_mode=check_crop_mode(str(values.get("crop_mode") or "center"), "crop_mode"),
        mean=tuple(float(v) for v in values.get("mean", (0.5, 0.5, 0.5))),
        std=tuple(float(v) for v in values.get("std", (0.5, 0.5, 0.5))),
        sources=sources,
        default_crop_pct=float(arch_cfg.get("crop_pct") or DEFAULT_CROP_PCT),
        default_input_size=arch_input_size(arch_cfg),
        default_source=arch_source,
    )
    return config


def arch_input_size(arch_cfg: Mapping[str, Any]) -> tuple[int, int]:
    """The architecture's own input size (timm's ``pretrained_cfg['input_size']``, 224×224 when absent)."""
    return _size(arch_cfg.get("input_size") or (3, 224, 224))  # type: ignore[return-value]
