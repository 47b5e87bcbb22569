"""The modules a hardened model's ``hardenctl`` metadata rebuilds before its weights load (FSR modules, AToP's
purifier): their sizes are read from the file, so they are checked before anything is allocated. A typo'd or hostile
``hidden`` of 1e12 otherwise asked torch for terabytes and ended in a crash (exit 3) instead of a one-line error.
No torch here: checking needs none.
"""

from __future__ import annotations

from typing import Any, Mapping

from ..errors import UserError
from .metadata import FLOAT32_MAX, MAX_IN_CHANS, MAX_INPUT_SIDE, SECTION_FIX, shown

MAX_FSR_STAGES = 64
MAX_FSR_HIDDEN = 4096
MAX_CHANNELS = 16384  # an FSR stage's or the purifier's widest layer
MAX_PURIFIER_DEPTH = 8
FSR_EXPECTED = {
    "stages": "a list of stage names",
    "hidden": f"a whole number from 1 to {MAX_FSR_HIDDEN}",
    "tau": "a number > 0",
    "channels": "one whole number per stage",
    "format": "a whole number",
}


def check_surgery(section: Mapping[str, Any], key: str = "hardenctl") -> None:
    """Check the ``fsr`` and ``atop`` parts of a parsed ``hardenctl`` section (absent or null: nothing to rebuild).

    Args:
        section: the parsed ``hardenctl`` metadata section.
        key: its name, as errors name it.
    """
    if section.get("fsr") is not None:
        check_fsr(f"{key}.fsr", section["fsr"])
    if section.get("atop") is not None:
        check_atop(f"{key}.atop", section["atop"])


def _whole_in(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def check_fsr(key: str, fsr: Any) -> None:
    """``hardenctl.fsr``: what rebuilds FSR modules before their weights load, so every size is bounded first.

    Args:
        key: the part's name, as errors name it.
        fsr: the stored ``fsr`` value.
    """
    if not isinstance(fsr, dict):
        raise UserError(
            f"the checkpoint's FSR metadata is malformed: {key!r} is {shown(fsr)}, not an object", SECTION_FIX
        )
    stages, channels, tau = fsr.get("stages"), fsr.get("channels"), fsr.get("tau")
    problems = {
        "stages": not (
            isinstance(stages, list)
            and 1 <= len(stages) <= MAX_FSR_STAGES
            and all(isinstance(s, str) and 0 < len(s) <= 200 for s in stages)
        ),
        "hidden": not _whole_in(fsr.get("hidden"), 1, MAX_FSR_HIDDEN),
        "tau": isinstance(tau, bool) or not isinstance(tau, (int, float)) or not 0 < tau <= FLOAT32_MAX,
        "channels": channels is not None
        and not (
            isinstance(channels, list)
            and isinstance(stages, list)
            and len(channels) == len(stages)
            and all(_whole_in(c, 1, MAX_CHANNELS) for c in channels)
        ),
        "format": "format" in fsr and not _whole_in(fsr["format"], 1, 1_000_000),
    }
    for name, bad in problems.items():
        if bad:
            raise UserError(
                f"the checkpoint's FSR metadata is malformed: '{key}.{name}' is {shown(fsr.get(name))}, "
                f"not {FSR_EXPECTED[name]}",
                SECTION_FIX,
            )


def check_atop(key: str, atop: Any) -> None:
    """``hardenctl.atop``: the purifier's shape is built before its weights load, so it is bounded first (the
    transform's values are checked by :class:`~hardenctl.models.purifier.TransformConfig` when it is rebuilt).

    Args:
        key: the part's name, as errors name it.
        atop: the stored ``atop`` value.
    """
    transform = atop.get("transform") if isinstance(atop, dict) else None
    shape = atop.get("purifier") if isinstance(atop, dict) else None
    if not isinstance(transform, dict) or not isinstance(shape, dict):
        raise UserError(
            f"the checkpoint's AToP metadata is malformed: {key!r} is {shown(atop)}, not an object with "
            "'transform' and 'purifier'",
            SECTION_FIX,
        )
    width, depth = shape.get("width"), shape.get("depth")
    fits = (
        _whole_in(shape.get("channels"), 1, MAX_IN_CHANS)
        and _whole_in(width, 1, MAX_CHANNELS)
        and _whole_in(depth, 0, MAX_PURIFIER_DEPTH)
        and width * 2**depth <= MAX_CHANNELS
    )
    if not fits:
        raise UserError(
            f"the checkpoint's AToP metadata is malformed: '{key}.purifier' is {shown(shape)}, "
            "not a purifier hardenctl can build (whole channels, width and depth; "
            f"depth at most {MAX_PURIFIER_DEPTH}, width x 2^depth at most {MAX_CHANNELS})",
            SECTION_FIX,
        )
    block = transform.get("block")
    if block is not None and not _whole_in(block, 1, MAX_INPUT_SIDE):
        raise UserError(
            f"the checkpoint's AToP metadata is malformed: '{key}.transform.block' is {shown(block)}, "
            f"not a whole number of pixels from 1 to {MAX_INPUT_SIDE}",
            SECTION_FIX,
        )
