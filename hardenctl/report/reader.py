"""The one reader for every report read back: ``compare``, ``card``, ``eval --baseline`` and :func:`load_report`.

A report on disk is checked before anything uses it, in this order, and each problem is one line (UserError, exit 2)
naming the file, the field and the fix:

1. the file: a file (not a folder), at most :data:`MAX_REPORT_BYTES`, UTF-8;
2. the JSON: parsed without letting deep nesting exhaust the stack, at most :data:`MAX_DEPTH` levels deep, and no
   ``NaN``/``Infinity`` anywhere (Python's json reads and writes them; JSON has no such numbers, hardenctl never
   writes one, and RobustBench's tools and ``jq`` refuse them);
3. ``schema_version``: this hardenctl's (:data:`~hardenctl.report.schema.SCHEMA_VERSION`; a harden report's
   :data:`HARDEN_SCHEMA_VERSION`), or an older one :data:`MIGRATIONS` brings up to it; a newer one is refused with
   "upgrade hardenctl", an unknown one is named;
4. every field a command reads, its type and range (:mod:`hardenctl.report.eval_fields`).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Callable

from ..errors import UserError
from .common import clean_text
from .eval_fields import check_eval_report, check_harden_report
from .fields import REPORT_FIX, NonFinite, key_text, shown
from .schema import SCHEMA_VERSION, Check, Gate, Report

# Why 32 MB: a report is a summary (per-sample results go to their own file), so it grows with the number of classes
# only, by about 0.33 KB per class and evaluation: an ImageNet-1k eval report is 0.33 MB, a harden report with four
# evaluations under 2 MB, a 21k-class harden report with two evaluations about 14 MB. Reading and checking 31 MB took
# 3.8 s and 290 MB of memory on a 2-core machine; a larger file (or /dev/zero named report.json) is refused before it
# is read, so no file can take more.
MAX_REPORT_BYTES = 32 * 2**20
# levels of nesting: hardenctl writes fewer than 8 (harden → hardened → model → data_config → ...)
MAX_DEPTH = 32
HARDEN_SCHEMA_VERSION = "harden-1.0"  # hardenctl.training.report writes it (that package sits above this one)

# An older schema_version this hardenctl can still read -> a function returning the report at the next version.
# None yet: "1.0" is the first. When a change removes or renames a key (and bumps SCHEMA_VERSION), the function that
# turns the old form into the new one goes here, so reports written before the change stay readable.
Migration = Callable[[dict[str, Any]], dict[str, Any]]
MIGRATIONS: dict[str, Migration] = {}
_VERSION = re.compile(r"(harden-)?(\d{1,6})\.(\d{1,6})")


def parse_json(text: str) -> Any:
    """``text`` as JSON, ``NaN``/``Infinity`` kept as :class:`NonFinite` markers; ValueError with a short reason when
    it is not JSON or is nested too deeply to parse (caught here, not left to exhaust the stack)."""
    try:
        return json.loads(text, parse_constant=NonFinite)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None
    except RecursionError:
        raise ValueError(f"nested more than {MAX_DEPTH} levels deep") from None
    except ValueError:  # Python refuses to read an integer of more than 4,300 digits
        raise ValueError("it holds a number with thousands of digits") from None


def find_damage(value: Any, max_depth: int = MAX_DEPTH) -> tuple[str, str] | None:
    """(field path, what is wrong) for the first ``NaN``/``Infinity`` or nesting deeper than ``max_depth`` in document
    order, None when there is none. Iterative, so no nesting can exhaust the stack here; each node carries its keys as
    a linked pair (key, parent's), so a path is spelled only for the one node that is refused."""
    stack: list[tuple[Any, int, Any]] = [(value, 0, None)]
    while stack:
        item, depth, trail = stack.pop()
        if isinstance(item, NonFinite) or (isinstance(item, float) and not math.isfinite(item)):
            token = json.dumps(float(str(item)))  # NaN, Infinity or -Infinity, as the file spells it
            return _spelled(trail), f"is {token}, which is not a JSON number (hardenctl never writes it)"
        if not isinstance(item, (dict, list)):
            continue
        if depth >= max_depth:
            return _spelled(trail), f"is nested more than {max_depth} levels deep (hardenctl writes fewer than 8)"
        children = item.items() if isinstance(item, dict) else enumerate(item)
        stack.extend(reversed([(child, depth + 1, (key, trail)) for key, child in children]))
    return None


def _spelled(trail: Any) -> str:
    """``hardened.per_class.3.n``, ``checks[2].value`` from a linked (key, parent's) pair; "the file" for the top."""
    keys = []
    while trail is not None:
        key, trail = trail
        keys.append(key)
    path = ""
    for key in reversed(keys):
        path += f"[{key}]" if isinstance(key, int) else f".{key_text(key)}"
    return path.lstrip(".") or "the file"


def read_json_file(path: str | Path) -> Any:
    """The JSON in a report file, checked for size, encoding, nesting and ``NaN``/``Infinity`` (steps 1 and 2)."""
    path = Path(path)
    name = clean_text(path)
    if path.is_dir():
        raise UserError(
            f"{name} is a folder, not a report file", f"pass the report.json inside it, e.g. {name}/report.json"
        )
    if not path.exists():
        raise UserError(
            f"report {name} does not exist",
            "pass the report.json that `hardenctl eval --report` or `harden --out` wrote",
        )
    if not path.is_file():
        raise UserError(f"{name} is not a regular file (a device, a pipe or a socket)", REPORT_FIX)
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_REPORT_BYTES + 1)  # never more, whatever the file claims to be
    except OSError as exc:
        raise UserError(
            f"cannot read {name}: {exc.strerror or type(exc).__name__}", "check the path and its permissions"
        ) from None
    if len(raw) > MAX_REPORT_BYTES:
        raise UserError(
            f"{name} is larger than {MAX_REPORT_BYTES // 2**20} MB, more than any hardenctl report "
            "(per-sample results go to their own file)",
            REPORT_FIX,
        )
    try:
        data = parse_json(raw.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise UserError(f"{name} is not a JSON report (not UTF-8 text)", REPORT_FIX) from None
    except ValueError as exc:
        raise UserError(f"{name} is not a JSON report ({exc})", REPORT_FIX) from None
    _refuse_damage(data, name)
    return data


def _refuse_damage(data: Any, name: str) -> None:
    damage = find_damage(data)
    if damage is not None:
        path, problem = damage
        where = path if len(path) <= 80 else f"{path[:30]}…{path[-45:]}"
        raise UserError(f"{name}: {where} {problem}", REPORT_FIX)


def is_harden_data(data: dict[str, Any]) -> bool:
    """A harden report (input and hardened model): by its schema_version, or, as the card tells, by both sections."""
    version = data.get("schema_version")
    return (isinstance(version, str) and version.startswith("harden-")) or ("input" in data and "hardened" in data)


def migrated(data: dict[str, Any], name: str, where: str, current: str) -> dict[str, Any]:
    """``data`` at schema_version ``current`` (step 3): as it is, or brought up by :data:`MIGRATIONS`; refused when
    it is newer than this hardenctl or unknown, naming the version."""
    field = f"{name}: {where}schema_version"
    if "schema_version" not in data:
        raise UserError(f"{field} is missing (hardenctl always writes it)", REPORT_FIX)
    for _ in range(len(MIGRATIONS)):  # each step moves one version up; the bound keeps a faulty table from looping
        version = data["schema_version"]
        if not isinstance(version, str) or version == current or version not in MIGRATIONS:
            break
        data = MIGRATIONS[version](data)
    version = data.get("schema_version")
    if version == current:
        return data
    if not isinstance(version, str):
        raise UserError(f"{field} is {shown(version)}, not a version such as {json.dumps(current)}", REPORT_FIX)
    found, ours = _VERSION.fullmatch(version), _VERSION.fullmatch(current)
    if found and ours and found.group(1) == ours.group(1) and _numbers(found) > _numbers(ours):
        raise UserError(
            f"{field} is {shown(version)}: it was written by a newer hardenctl (this one reads {json.dumps(current)})",
            "upgrade hardenctl (pip install -U hardenctl) to read it",
        )
    raise UserError(
        f"{field} is {shown(version)}, a version this hardenctl does not know (it reads {json.dumps(current)})",
        REPORT_FIX,
    )


def _numbers(match: re.Match) -> tuple[int, int]:
    return int(match.group(2)), int(match.group(3))


def checked_report_data(data: Any, name: str) -> dict[str, Any]:
    """An eval or harden report's parsed JSON, migrated to this hardenctl's schema and checked field by field
    (steps 3 and 4); ``name`` is the file as the errors call it."""
    if not isinstance(data, dict):
        what = "a list" if isinstance(data, list) else "not an object"
        raise UserError(f"{name} is not a hardenctl report (its JSON is {what})", REPORT_FIX)
    if is_harden_data(data):
        data = migrated(data, name, "", HARDEN_SCHEMA_VERSION)
        return check_harden_report(data, name, lambda part, where: migrated(part, name, where, SCHEMA_VERSION))
    if not {"schema_version", "clean_accuracy", "robust_accuracy"} & set(data):
        raise UserError(
            f"{name} is not a hardenctl report (no schema_version, clean_accuracy or robust_accuracy)", REPORT_FIX
        )
    data = migrated(data, name, "", SCHEMA_VERSION)
    check_eval_report(data, name)
    return data


def read_report_json(path: str | Path) -> dict[str, Any]:
    """A report.json as written (an eval report, or a harden report holding ``input`` and ``hardened``), checked
    before use: one-line errors naming the file and the field for a missing, foreign, damaged or hostile file."""
    return checked_report_data(read_json_file(path), clean_text(path))


def load_report(path: str | Path) -> Report:
    """An eval report (e.g. a ``--baseline``) from its JSON file, checked as :func:`read_report_json` checks it."""
    data = read_json_file(path)
    name = clean_text(path)
    if isinstance(data, dict) and is_harden_data(data):
        raise UserError(
            f"{name} is a harden report (an input and a hardened model)",
            "pass the report.json of one evaluation (`hardenctl eval --report`)",
        )
    return build_report(checked_report_data(data, name))


def report_from_dict(data: Any, name: str = "the report") -> Report:
    """Rebuild an eval report from its JSON form (parsed), checked first; ``name`` says where it came from."""
    if isinstance(data, dict) and is_harden_data(data):
        raise UserError(
            f"{clean_text(name)} is a harden report (an input and a hardened model)",
            "pass one evaluation's report (a harden report's input or hardened section)",
        )
    _refuse_damage(data, clean_text(name))
    return build_report(checked_report_data(data, clean_text(name)))


def build_report(data: dict[str, Any]) -> Report:
    """A Report from a checked dict (keys it does not know, e.g. ``intervals``, are derived or a newer writer's)."""
    data = dict(data)
    checks, gates = Check.__dataclass_fields__, Gate.__dataclass_fields__
    data["checks"] = [Check(**{k: v for k, v in c.items() if k in checks}) for c in data.get("checks", [])]
    data["gates"] = [Gate(**{k: v for k, v in g.items() if k in gates}) for g in data.get("gates", [])]
    known = set(Report.__dataclass_fields__) - {"samples", "pictures"}  # never from a file: drawn or in their own file
    return Report(**{k: v for k, v in data.items() if k in known})


__all__ = [
    "HARDEN_SCHEMA_VERSION",
    "MAX_DEPTH",
    "MAX_REPORT_BYTES",
    "MIGRATIONS",
    "build_report",
    "checked_report_data",
    "find_damage",
    "load_report",
    "parse_json",
    "read_json_file",
    "read_report_json",
    "report_from_dict",
]
