"""Checkpoint metadata: accept what exporters actually write.

safetensors header values are strings: hardenctl writes JSON, other tools write "0.485,0.456,0.406",
"(0.5, 0.5, 0.5)" or "True". Each parser returns a checked value or raises a one-line UserError naming
the key, its value and the fix. No torch here: parsing needs none.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from ..errors import UserError
from .data_config import MIN_CROP_PCT

# safetensors header values are strings. hardenctl writes JSON ("[0.3]", "10", "true"), but other
# exporters write "0.485,0.456,0.406", "(0.5, 0.5, 0.5)", "[0.5 0.5 0.5]", "3.0" or "True". Each
# parser takes the raw value (a header string, or an already-decoded value) and returns a checked
# Python value, or raises a one-line UserError naming the key, its value and the fix: a file from
# another tool must never end `eval` in a traceback.
MAX_NUM_CLASSES = 1_000_000  # bounds keep a typo ("1e30") from allocating a model that cannot exist
MAX_IN_CHANS = 4096
MAX_INPUT_SIDE = 16384
MAX_NAME_CHARS = 1000  # a class name longer than this is not a name (ImageNet's longest is under 100)
MAX_SECTION_CHARS = 1 << 20  # the hardenctl section hardenctl writes is a few kB
MAX_SECTION_DEPTH = 32
SECTION_FIX = (
    "re-export the model with hardenctl, or drop the 'hardenctl' key (hardenctl's record of how it made the model)"
)
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")  # control, line breaks, lone surrogates
FLOAT32_MAX = 3.4028234663852886e38  # torch.finfo(torch.float32).max, without importing torch
FLOAT32_TINY = 1.1754943508222875e-38  # torch.finfo(torch.float32).tiny
_EXAMPLES = {
    "arch": "arch=resnet18 (a timm model name)",
    "num_classes": "num_classes=10",
    "in_chans": "in_chans=3",
    "mean": "mean=0.485,0.456,0.406",
    "std": "std=0.229,0.224,0.225",
    "input_size": "input_size=3,224,224",
    "randomized": "randomized=true (or false)",
    "interpolation": "interpolation=bicubic",
    "crop_pct": "crop_pct=0.875",
    "crop_mode": "crop_mode=center",
    "label_names": 'label_names=["cat","dog"]',
}


def shown(value: Any, limit: int = 60) -> str:
    """``repr`` of a value, cut to ``limit`` characters: an error stays one readable line.

    Args:
        value: anything.
        limit: characters kept.
    """
    text = repr(value)
    if len(text) > limit:  # keep a string's closing quote: '9999...'
        text = text[: limit - 4] + "..." + (text[-1] if isinstance(value, str) else "")
    return text


def _bad(key: str, value: Any, expected: str) -> UserError:
    return UserError(
        f"checkpoint metadata {key!r} is {shown(value)}, {expected}",
        f"re-export the file with e.g. {_EXAMPLES.get(key, key + '=...')}",
    )


def decode_value(value: Any) -> Any:
    """A header string decoded as JSON where it is JSON (what hardenctl writes), else unchanged.

    Never raises: a huge integer (ValueError past Python's digit limit) or a deeply nested
    array (RecursionError) is just "not JSON" here, for the parsers to reject.

    Args:
        value: a header value (a string, or already decoded).
    """
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except (ValueError, RecursionError):  # json.JSONDecodeError is a ValueError
        return value


def is_declared(value: Any) -> bool:
    """False for the ways exporters write "not set": absent, "", "null", "None" (Python's str(None)).

    Args:
        value: a metadata value.
    """
    if value is None:
        return False
    return not (isinstance(value, str) and value.strip().lower() in ("", "null", "none"))


def _number(item: Any) -> float | None:
    """A float from a JSON number or a numeric string ("0.5", " 1e-3 "); None for anything else.

    Not finite-checked here (callers say which of "not a number" / "not finite" applies).
    """
    if isinstance(item, bool):
        return None  # JSON true is not 1.0
    if isinstance(item, (int, float)):
        try:
            return float(item)
        except OverflowError:  # an int beyond float range
            return math.inf if item > 0 else -math.inf
    if isinstance(item, str):
        try:
            return float(item.strip())
        except ValueError:
            return None
    return None


def _whole(item: Any) -> int | None:
    """An int from an int, an integral float (3.0, "3.0", "1e3") or a numeric string; else None."""
    if isinstance(item, bool):
        return None
    if isinstance(item, int):
        return item
    if isinstance(item, str):
        try:
            return int(item.strip())
        except ValueError:
            pass  # "3.0", "1e3" (or past the int digit limit) go through float
    number = _number(item)
    if number is None or not math.isfinite(number) or not number.is_integer():
        return None
    return int(number)


def _split_numbers(text: str) -> list[str] | None:
    """The parts of "a,b,c", "a b c", "(a, b, c)", "[a b c]" or "(a,)"; None when it has no such shape."""
    text = text.strip()
    if len(text) >= 2 and text[0] + text[-1] in ("()", "[]"):
        text = text[1:-1].strip()
    if "," in text:
        parts = [part.strip() for part in text.split(",")]
        if len(parts) > 1 and parts[-1] == "":
            parts.pop()  # a Python tuple's trailing comma: "(0.5,)"
    else:
        parts = text.split()
    if not parts or any(not part or any(ch.isspace() for ch in part) for part in parts):
        return None  # "", "1,,2", "1, 2 3": not a list anyone meant
    return parts


def _numbers(value: Any) -> list[float] | None:
    """The numbers of a JSON list / JSON number / separated text; None when it is anything else."""
    decoded = decode_value(value)
    if isinstance(decoded, (list, tuple)):  # JSON lists; tuples where timm parsed the value
        items: list[Any] = list(decoded)
    elif isinstance(decoded, str):
        parts = _split_numbers(decoded)
        if parts is None:
            return None
        items = parts
    else:
        items = [decoded]  # a bare number; a dict, bool or null fails in _number
    numbers = [_number(item) for item in items]
    if not numbers or any(n is None for n in numbers):
        return None
    return numbers  # type: ignore[return-value]


def parse_float_list(key: str, value: Any, positive: bool = False) -> tuple[float, ...]:
    """``mean``/``std``: one value per channel (or one for all), from any of the list spellings above.

    Finite values only, also once stored as float32 (the model's buffers: 1e39 would become inf),
    and for ``std`` strictly positive there too (1e-320 would become 0): normalising divides by it.

    Args:
        key: the metadata key, as errors name it.
        value: what the file stores: a JSON-decoded value or the raw header string.
        positive: refuse zero and negative values (``std``).
    """
    numbers = _numbers(value)
    if numbers is None:
        raise _bad(key, value, "not a list of numbers")
    if not all(math.isfinite(n) and abs(n) <= FLOAT32_MAX for n in numbers):
        raise _bad(key, value, "not a list of finite numbers")
    if positive and min(numbers) < FLOAT32_TINY:
        raise _bad(key, value, "not a list of numbers > 0")
    return tuple(numbers)


def parse_int(key: str, value: Any, maximum: int) -> int:
    """``num_classes``/``in_chans``: a whole number in [1, maximum], written 10, "10", "10.0" or "1e1".

    Exporters stringify ints through floats; a fractional, non-finite or absurd value is an error
    rather than a model built with the wrong head.

    Args:
        key: the metadata key, as errors name it.
        value: what the file stores: a JSON-decoded value or the raw header string.
        maximum: the largest value accepted.
    """
    number = _whole(decode_value(value))
    if number is None or not 1 <= number <= maximum:
        raise _bad(key, value, f"not a whole number from 1 to {maximum}")
    return number


def parse_input_size(key: str, value: Any) -> tuple[int, int]:
    """``input_size`` as (H, W): from "C,H,W" (timm's order), "H,W", one side "224", a JSON list, or
    "HxW" as ``--input-size`` takes it.

    Only the spatial size matters to hardenctl (channels come from ``in_chans`` and the weights).

    Args:
        key: the metadata key, as errors name it.
        value: what the file stores: a JSON-decoded value or the raw header string.
    """
    text = value
    if isinstance(value, str) and re.fullmatch(r"\s*\d+(\s*[xX]\s*\d+){1,2}\s*", value):
        text = re.sub(r"\s*[xX]\s*", ",", value.strip())
    numbers = _numbers(text)
    sides = [_whole(n) for n in numbers] if numbers is not None else []
    if not 1 <= len(sides) <= 3 or any(s is None or s < 1 for s in sides):
        raise _bad(key, value, "not H,W or C,H,W in positive whole numbers")
    height, width = sides[-2:] if len(sides) > 1 else sides * 2
    if max(height, width) > MAX_INPUT_SIDE:  # type: ignore[type-var]
        raise _bad(key, value, f"larger than {MAX_INPUT_SIDE} pixels")
    return int(height), int(width)  # type: ignore[arg-type]


def parse_bool(key: str, value: Any) -> bool:
    """``randomized``: JSON true/false, or the strings true/false/1/0 in any case ("True" from Python).

    ``bool("false")`` is True, so a string is never just cast.

    Args:
        key: the metadata key, as errors name it.
        value: what the file stores: a JSON-decoded value or the raw header string.
    """
    decoded = decode_value(value)
    if isinstance(decoded, bool):
        return decoded
    if isinstance(decoded, int) and decoded in (0, 1):
        return bool(decoded)
    if isinstance(decoded, str) and decoded.strip().lower() in ("true", "false", "1", "0"):
        return decoded.strip().lower() in ("true", "1")
    raise _bad(key, value, "not true or false")


def parse_arch(key: str, value: Any) -> str:
    """``arch``: a timm model name, a plain or JSON-quoted string; whether timm knows it is checked later.

    Anything else (a number, a list, text with spaces or control characters) cannot name a model.

    Args:
        key: the metadata key, as errors name it.
        value: what the file stores: a JSON-decoded value or the raw header string.
    """
    decoded = decode_value(value)
    if isinstance(decoded, str):
        name = decoded.strip()
        if name and len(name) <= 200 and name.isprintable() and not any(ch.isspace() for ch in name):
            return name
    raise _bad(key, value, "not a timm model name")


def parse_choice(key: str, value: Any, choices: tuple[str, ...]) -> str:
    """``interpolation`` / ``crop_mode``: one of timm's names, plain or JSON-quoted.

    Args:
        key: the metadata key, as errors name it.
        value: what the file stores: a JSON-decoded value or the raw header string.
        choices: the names accepted.
    """
    decoded = decode_value(value)
    if isinstance(decoded, str) and decoded.strip().lower() in choices:
        return decoded.strip().lower()
    raise _bad(key, value, f"not one of {', '.join(choices)}")


def parse_crop_pct(key: str, value: Any) -> float:
    """``crop_pct``: the fraction of the resized image the centre crop keeps, in [0.05, 1].

    Images are resized to ``size / crop_pct`` first: 1e-300 asked for a resize past any integer (a crash), and
    no model is trained on a crop of less than a twentieth of its image.

    Args:
        key: the metadata key, as errors name it.
        value: what the file stores: a JSON-decoded value or the raw header string.
    """
    numbers = _numbers(value)
    if numbers is None or len(numbers) != 1 or not (MIN_CROP_PCT <= numbers[0] <= 1):
        raise _bad(key, value, f"not a number in [{MIN_CROP_PCT}, 1]")
    return float(numbers[0])


def name_problem(name: Any) -> str | None:
    """Why ``name`` cannot be a class name, or None when it can.

    Names are printed on one line in every report and written to UTF-8 files: a string, not blank, of reasonable
    length, without control characters, line breaks or lone surrogates (which no UTF-8 file can hold).

    Args:
        name: a would-be class name (any value).
    """
    if not isinstance(name, str):
        return "is not a string"
    if not name.strip():
        return "is blank"
    if len(name) > MAX_NAME_CHARS:
        return f"is longer than {MAX_NAME_CHARS} characters"
    bad = _UNPRINTABLE.search(name)
    return f"holds the character {ascii(bad.group())}" if bad else None


def parse_label_names(key: str, value: Any) -> list[str]:
    """``label_names``: a JSON list of strings (what hardenctl and timm write) or comma-separated names.

    A JSON number is not a name: a list of ids instead of names is an exporter's mistake, said rather than guessed.

    Args:
        key: the metadata key, as errors name it.
        value: what the file stores: a JSON-decoded value or the raw header string.
    """
    decoded = decode_value(value)
    if isinstance(decoded, str):
        decoded = [part.strip() for part in decoded.split(",")]
    if not isinstance(decoded, list) or not decoded:
        raise _bad(key, value, "not a list of class names")
    if len(decoded) > MAX_NUM_CLASSES:
        raise _bad(key, value, f"more than {MAX_NUM_CLASSES} class names")
    for index, name in enumerate(decoded):
        problem = name_problem(name)
        if problem is not None:
            raise _bad(key, value, f"not a list of class names (name {index} ({shown(name, 30)}) {problem})")
    return [name.strip() for name in decoded]


def _json_problem(value: Any) -> str | None:
    """Why a decoded JSON value cannot be carried on (None when it can): deeper than :data:`MAX_SECTION_DEPTH` or
    holding NaN/infinity (JSON has neither; the section is copied into every model hardened from this one)."""
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if depth > MAX_SECTION_DEPTH:
            return f"nested deeper than {MAX_SECTION_DEPTH} levels"
        if isinstance(item, float) and not math.isfinite(item):
            return "holding NaN or infinity"
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        pending.extend((child, depth + 1) for child in children)
    return None


def parse_section(key: str, value: Any) -> dict[str, Any]:
    """The ``hardenctl`` section (recipe, settings, the FSR/AToP structure to rebuild) as a checked dict.

    hardenctl writes a JSON object; anything else is a one-line error naming the key, as for every key hardenctl
    reads. The section is copied into models hardened from this one and shown by ``hardenctl info``, so it must stay
    JSON (finite numbers, bounded depth and size). The modules its ``fsr`` and ``atop`` parts rebuild are checked by
    :func:`hardenctl.models.surgery.check_surgery`; other keys in it are kept, unread.

    Args:
        key: the metadata key, as errors name it.
        value: what the file stores: a JSON-decoded value or the raw header string.
    """
    if not is_declared(value):
        return {}
    if isinstance(value, str) and len(value) > MAX_SECTION_CHARS:
        raise UserError(
            f"checkpoint metadata {key!r} is {len(value):,} characters long, more than hardenctl writes "
            f"({MAX_SECTION_CHARS:,} at most)",
            SECTION_FIX,
        )
    decoded = decode_value(value)
    if not isinstance(decoded, dict):
        raise UserError(f"checkpoint metadata {key!r} is {shown(value)}, not a JSON object", SECTION_FIX)
    problem = _json_problem(decoded)
    if problem is not None:
        raise UserError(f"checkpoint metadata {key!r} is a JSON object {problem}", SECTION_FIX)
    return decoded
