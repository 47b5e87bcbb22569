"""The data config that travels with a model: how its images must be prepared, and where each value came from.

A robust-accuracy number measures the model that ships only if the images reach it as they did in
training: timm resizes the short side to ``size / crop_pct`` and centre-crops with the model's
interpolation. One :class:`DataConfig` per model, resolved once from (in order) hardenctl's own
metadata, the args a timm ``train.py`` checkpoint stores, a model folder's ``pretrained_cfg``; flags
override any of them (recorded as such); with nothing declared, data whose images share one size is
used at that size, and otherwise the architecture's timm ``pretrained_cfg`` is named as the source.
What is not declared is filled by timm's own ``resolve_data_config`` (imported on use: the checks here
need no torch, so the CLI can run them before importing it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from ..errors import UserError

INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "lanczos", "box", "hamming", "random")
CROP_MODES = ("center", "squash", "border")
FIELDS = ("input_size", "interpolation", "crop_pct", "crop_mode", "mean", "std")
DEFAULT_CROP_PCT = 0.875  # timm's DEFAULT_CROP_PCT: what timm uses when nothing says otherwise (no torch import here)


@dataclass
class DataConfig:
    """``input_size`` is (H, W); ``crop_pct`` None means "not declared": photos get the architecture's default
    (what timm's ``validate.py`` uses), in-memory arrays already at the input size are used as they are.
    ``sources`` maps each field to where it came from: ``checkpoint``, ``train.py args``, ``config.json``, ``cli``,
    ``cli (overrides <source>)``, ``data``, ``timm pretrained_cfg of <arch>``."""

    input_size: tuple[int, int] | None = None
    interpolation: str = "bilinear"
    crop_pct: float | None = None
    crop_mode: str = "center"
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
    sources: dict[str, str] = field(default_factory=dict)
    default_crop_pct: float = (
        DEFAULT_CROP_PCT  # used for photos (and arrays of another size) when crop_pct is undeclared
    )
    default_input_size: tuple[int, int] | None = (
        None  # the architecture's own size: for photos of mixed sizes, undeclared
    )
    default_source: str = "timm default"  # what the two defaults are named in reports

    @property
    def crop_declared(self) -> bool:
        return self.crop_pct is not None

    @property
    def effective_crop_pct(self) -> float:
        return self.crop_pct if self.crop_pct is not None else self.default_crop_pct

    def to_dict(self) -> dict[str, Any]:
        """For reports and metadata: the values, the crop_pct actually used, and each value's source."""
        return {
            "input_size": list(self.input_size) if self.input_size else None,
            "interpolation": self.interpolation,
            "crop_pct": self.crop_pct,
            "crop_mode": self.crop_mode,
            "mean": list(self.mean),
            "std": list(self.std),
            "effective_crop_pct": self.effective_crop_pct,
            "sources": dict(self.sources),
        }

    def timm_cfg(self, in_chans: int) -> tuple[dict[str, Any], list[str]]:
        """The timm ``pretrained_cfg`` keys (what ``config.json`` carries), complete: timm fills anything missing
        with its own defaults (crop_pct 0.875, 224 px), not the architecture's that hardenctl uses, so an
        undeclared ``crop_pct`` or ``input_size`` is written as the value hardenctl uses and also named in the
        returned list, so that hardenctl reading the folder back keeps it undeclared (arrays at the input size
        are then still used as they are)."""
        cfg: dict[str, Any] = {
            "interpolation": self.interpolation,
            "crop_mode": self.crop_mode,
            "mean": list(self.mean),
            "std": list(self.std),
            "crop_pct": self.effective_crop_pct,
        }
        undeclared = [] if self.crop_declared else ["crop_pct"]
        size = self.input_size or self.default_input_size
        if size:
            cfg["input_size"] = [in_chans, *size]
            if self.input_size is None:
                undeclared.append("input_size")
        return cfg, undeclared


MIN_CROP_PCT = 0.05  # a smaller crop_pct resizes the short side past 20x the input size (1e-300 overflowed)


def check_crop_pct(value: float, where: str = "--crop-pct") -> float:
    """``value`` as a float when it is a usable ``crop_pct``, else a one-line error.

    Args:
        value: the fraction of the resized image the centre crop keeps.
        where: the flag or key, as the error names it.
    """
    if not (MIN_CROP_PCT <= float(value) <= 1):
        raise UserError(
            f"{where} must be in [{MIN_CROP_PCT}, 1], got {value}", "pass e.g. --crop-pct 0.875 (1.0: no crop)"
        )
    return float(value)


def check_interpolation(value: str, where: str = "--interpolation") -> str:
    """``value`` when it is one of timm's interpolations, else a one-line error.

    Args:
        value: ``bilinear``, ``bicubic``, ... (see :data:`INTERPOLATIONS`).
        where: the flag or key, as the error names it.
    """
    if value not in INTERPOLATIONS:
        raise UserError(f"{where}: unknown interpolation {value!r}", f"use one of {', '.join(INTERPOLATIONS)}")
    return value


def check_crop_mode(value: str, where: str = "--crop-mode") -> str:
    """``value`` when it is one of timm's crop modes, else a one-line error.

    Args:
        value: ``center``, ``squash`` or ``border``.
        where: the flag or key, as the error names it.
    """
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


def declared_values(
    declared: list[tuple[str, Mapping[str, Any]]], flags: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, str]]:
    """What was declared and by whom: layers ``[(source, values), ...]`` (first wins), flags on top.

    Args:
        declared: ``[(source, values), ...]``, the first layer that sets a field wins.
        flags: values given on the command line (None: not given).
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
    return values, sources


def timm_defaults(arch_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """What timm's own ``resolve_data_config`` makes of the architecture's ``pretrained_cfg`` with nothing
    declared: the values everything undeclared falls back to (timm's rules and defaults, not a copy of them).

    Args:
        arch_cfg: the architecture's ``pretrained_cfg`` (empty: timm's defaults).
    """
    from timm.data import resolve_data_config as timm_resolve_data_config
    from timm.models import PretrainedCfg

    cfg = dict(arch_cfg) or PretrainedCfg().to_dict()  # no architecture config: timm's own defaults
    return timm_resolve_data_config(pretrained_cfg=cfg)


def build_data_config(
    declared: list[tuple[str, Mapping[str, Any]]], flags: Mapping[str, Any], arch_cfg: Mapping[str, Any], arch: str
) -> DataConfig:
    """One data config: declared layers (``[(source, values), ...]``, first wins) and flags on top, each value's
    source recorded; the rest filled by timm's ``resolve_data_config`` from the architecture's ``pretrained_cfg``
    (:func:`timm_defaults`).

    ``input_size`` and ``crop_pct`` stay None when nobody declared them (timm's values are kept as the
    defaults): the caller decides with the data (arrays at one shared size are used as they are).

    Args:
        declared: ``[(source, values), ...]``, the first layer that sets a field wins.
        flags: values given on the command line (None: not given).
        arch_cfg: the architecture's ``pretrained_cfg`` (empty: timm's defaults).
        arch: the architecture's name, as the sources record it.
    """
    values, sources = declared_values(declared, flags)
    defaults = timm_defaults(arch_cfg)
    arch_source = f"timm pretrained_cfg of {arch}" if arch_cfg else "timm default"
    for key in ("interpolation", "crop_mode", "mean", "std"):
        if key not in values:
            values[key] = defaults[key]
            sources[key] = arch_source if arch_cfg.get(key) is not None else "timm default"
    return DataConfig(
        input_size=_size(values.get("input_size")),
        interpolation=check_interpolation(str(values["interpolation"]), "interpolation"),
        crop_pct=check_crop_pct(values["crop_pct"], f"crop_pct (from {sources['crop_pct']})")
        if values.get("crop_pct") is not None
        else None,
        crop_mode=check_crop_mode(str(values["crop_mode"] or "center"), "crop_mode"),
        mean=tuple(float(v) for v in values["mean"]),
        std=tuple(float(v) for v in values["std"]),
        sources=sources,
        default_crop_pct=float(defaults["crop_pct"]),
        default_input_size=_size(defaults["input_size"]),
        default_source=arch_source,
    )
