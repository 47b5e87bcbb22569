"""What a checkpoint, a timm ``train.py`` run or a model folder declares: every key through its parser.

:mod:`.metadata` checks one value at a time; this is the one table of which parser reads which key, and the three
places a model's settings are read from (header metadata, ``train.py`` args, a folder's ``pretrained_cfg``), so a
value means the same wherever it was written.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from .data_config import CROP_MODES, FIELDS, INTERPOLATIONS
from .metadata import (
    MAX_IN_CHANS,
    MAX_NUM_CLASSES,
    is_declared,
    parse_arch,
    parse_bool,
    parse_choice,
    parse_crop_pct,
    parse_float_list,
    parse_input_size,
    parse_int,
    parse_label_names,
    parse_section,
)

PARSERS: dict[str, Callable[[str, Any], Any]] = {  # the one table: header metadata, train.py args, config.json
    "arch": parse_arch,
    "num_classes": lambda key, value: parse_int(key, value, MAX_NUM_CLASSES),
    "in_chans": lambda key, value: parse_int(key, value, MAX_IN_CHANS),
    "input_size": parse_input_size,
    "mean": parse_float_list,
    "std": lambda key, value: parse_float_list(key, value, positive=True),
    "randomized": parse_bool,
    "interpolation": lambda key, value: parse_choice(key, value, INTERPOLATIONS),
    "crop_mode": lambda key, value: parse_choice(key, value, CROP_MODES),
    "crop_pct": parse_crop_pct,
    "label_names": parse_label_names,
}


def parse_values(raw: Mapping[str, Any], keys: tuple[str, ...], prefix: str = "") -> dict[str, Any]:
    """``keys`` that ``raw`` declares, each through its parser (named ``prefix + key`` in errors).

    Args:
        raw: key → stored value.
        keys: the keys to read (each has a parser in :data:`PARSERS`).
        prefix: put before each key in errors (``args.``, ...).
    """
    return {key: PARSERS[key](prefix + key, raw[key]) for key in keys if key in raw and is_declared(raw[key])}


def parse_metadata(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The settings a checkpoint declares, checked: only declared keys, unknown keys dropped.

    Args:
        raw: the checkpoint's metadata, key → stored value.
    """
    meta = parse_values(raw, tuple(PARSERS))
    if "hardenctl" in raw:
        meta["hardenctl"] = parse_section("hardenctl", raw["hardenctl"])
    return meta


def parse_train_args(args: Mapping[str, Any]) -> dict[str, Any]:
    """A timm ``train.py`` run's stored preprocessing (``img_size``/``input_size``, ``crop_pct``, ``interpolation``,
    ``mean``, ``std``) as data-config values, each checked like header metadata (named ``args.KEY`` in errors).

    Args:
        args: the checkpoint's ``args``, as a dict.
    """
    layer: dict[str, Any] = {}
    size = args.get("input_size") if args.get("input_size") is not None else args.get("img_size")
    if size is not None:
        layer["input_size"] = parse_input_size(
            "args.input_size" if args.get("input_size") is not None else "args.img_size", size
        )
    layer.update(
        parse_values(
            args, ("crop_pct", "interpolation", "crop_mode", "mean", "std", "num_classes", "in_chans"), "args."
        )
    )
    return layer


def parse_pretrained_cfg(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A model folder's ``pretrained_cfg`` as data-config values, checked like header metadata.

    Args:
        cfg: the folder's ``config.json`` ``pretrained_cfg``.
    """
    return parse_values(cfg, FIELDS, "config.json pretrained_cfg.")
