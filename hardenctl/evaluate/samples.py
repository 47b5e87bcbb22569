"""Per-sample results files (``hardenctl eval --samples FILE``): write, read, validate.

Format: JSON lines. The first line is a header naming the report the rows belong to::

    {"format": "hardenctl-samples", "version": 1, "model_sha256": "…", "data_sha256": "…", "eps": 0.0313…,
     "norm": "linf", "suite": "standard", "n": 1000, "seed": 0}

then one line per sample, in evaluation order (``Report.samples.rows()``)::

    {"index": 0, "source_id": "test/cat/0001.png", "label": 3, "clean_prediction": 3, "clean_correct": 1.0,
     "robust": false, "broken_by": "apgd-ce", "adversarial_prediction": 5}

Why JSON lines and not Parquet: no new dependency (pyarrow is a large install for a CI gate); written and read
one line at a time (streamable: memory stays flat however large n is); readable with ``head``, ``grep`` and ``jq``;
and diffable: ``diff old.jsonl new.jsonl`` shows exactly which samples changed. About 150 bytes a sample, so 10,000
samples are 1.5 MB, which is fine for a CI artefact; compress it if not.

The header is what lets a file be matched to its report: ``--baseline-samples`` refuses a file whose identity
(model and data sha256, ε, norm, suite, n, seed) is not the baseline report's. A file that is not one of ours, or is
damaged, is a one-line :class:`~hardenctl.errors.UserError` (exit 2), never a traceback.

Finding a baseline's file (``--baseline old.json`` without ``--baseline-samples``): first the ``samples_file`` that
old.json recorded (``--samples`` stores it relative to the report's folder, so the two can be moved together), then
``old.samples.jsonl`` beside old.json. When neither exists the ``max_drop_*`` gates compare the two reports' rates,
and their ``basis`` says so.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..files import atomic_path
from ..report import Report, SampleResults

FORMAT = "hardenctl-samples"
VERSION = 1
IDENTITY = ("model_sha256", "data_sha256", "eps", "norm", "suite", "n", "seed")
ROW_FIELDS = tuple(SampleResults.__dataclass_fields__)
_FIX = "pass a per-sample results file written by `hardenctl eval --samples`"


def identity(report: Report) -> dict[str, Any]:
    """The header line: the fields that identify the report a samples file belongs to."""
    return {"format": FORMAT, "version": VERSION, **{key: getattr(report, key) for key in IDENTITY}}


def write_samples(report: Report, path: str | Path) -> Path:
    """Write ``report.samples`` with its identity header to ``path``, atomically, one line at a time."""
    if report.samples is None:
        raise ValueError("this report carries no per-sample results (it was not made by hardenctl.evaluate)")
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(identity(report)) + "\n")
        for row in report.samples.rows():
            fh.write(json.dumps(row) + "\n")
    return Path(path)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# Per field: (test, what it must be), for the one-line error.
_ROW_TYPES = {
    "index": (_is_int, "an integer"),
    "source_id": (lambda v: isinstance(v, str), "a string"),
    "label": (_is_int, "an integer"),
    "clean_prediction": (_is_int, "an integer"),
    "clean_correct": (lambda v: (_is_int(v) or isinstance(v, float)) and 0 <= v <= 1, "a number in [0, 1]"),
    "robust": (lambda v: isinstance(v, bool), "true or false"),
    "broken_by": (lambda v: v is None or isinstance(v, str), "an attack name or null"),
    "adversarial_prediction": (_is_int, "an integer"),
}
assert set(_ROW_TYPES) == set(ROW_FIELDS), "SampleResults changed: update the samples file validation"


def _parse(line: str, path: Path, number: int) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except json.JSONDecodeError:
        raise UserError(f"{path} is not a hardenctl per-sample results file (line {number} is not JSON)", _FIX) from None
    if not isinstance(value, dict):
        raise UserError(f"{path} is not a hardenctl per-sample results file (line {number} is not a JSON object)", _FIX)
    return value


def read_samples(path: str | Path) -> tuple[dict[str, Any], SampleResults]:
    """(header, per-sample results) from a ``--samples`` file; a one-line UserError when it is foreign or damaged."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"per-sample results file not found: {path}", _FIX)
    columns: dict[str, list] = {name: [] for name in ROW_FIELDS}
    header: dict[str, Any] | None = None
    try:
        with open(path, encoding="utf-8") as fh:
            for number, line in enumerate(fh, start=1):
                if header is None:
                    header = _parse(line, path, number)
                    _check_header(header, path)
                    continue
                if not line.strip():
                    raise UserError(f"{path} is damaged: line {number} is empty", _FIX)
                row = _parse(line, path, number)
                for name in ROW_FIELDS:
                    if name not in row:
                        raise UserError(f"{path} is damaged: line {number} has no {name!r}", _FIX)
                    test, expected = _ROW_TYPES[name]
                    if not test(row[name]):
                        raise UserError(f"{path} is damaged: line {number}: {name} must be {expected}", _FIX)
                    columns[name].append(row[name])
                if row["index"] != number - 2:
                    raise UserError(f"{path} is damaged: line {number} has index {row['index']}, expected {number - 2} "
                                    "(rows are in evaluation order)", _FIX)
    except UnicodeDecodeError:
        raise UserError(f"{path} is not a hardenctl per-sample results file (not UTF-8 text)", _FIX) from None
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or type(exc).__name__}", "check the path and permissions") from None
    if header is None:
        raise UserError(f"{path} is not a hardenctl per-sample results file (it is empty)", _FIX)
    rows = len(columns["index"])
    if rows != header["n"]:
        raise UserError(f"{path} is incomplete: its header says n = {header['n']} but it has {rows} sample rows", _FIX)
    return header, SampleResults(**columns)


def _check_header(header: dict[str, Any], path: Path) -> None:
    if header.get("format") != FORMAT:
        raise UserError(f"{path} is not a hardenctl per-sample results file (no '{FORMAT}' header line)", _FIX)
    if header.get("version") != VERSION:
        raise UserError(f"{path} has per-sample results format version {header.get('version')!r}; this hardenctl reads "
                        f"version {VERSION}", "write it again with this hardenctl's `hardenctl eval --samples`, or upgrade hardenctl")
    missing = [key for key in IDENTITY if key not in header]
    if missing:
        raise UserError(f"{path} is damaged: its header has no {missing[0]!r}", _FIX)
    if not _is_int(header["n"]) or header["n"] < 0 or not isinstance(header["eps"], (int, float)) or isinstance(header["eps"], bool):
        raise UserError(f"{path} is damaged: its header's n or eps is not a number", _FIX)


def check_identity(header: dict[str, Any], report: Report, path: str | Path, what: str = "the baseline report") -> None:
    """Refuse (UserError) a samples file whose header does not identify ``report``, naming the first difference."""
    for key in IDENTITY:
        mine, theirs = header.get(key), getattr(report, key)
        same = abs(float(mine) - float(theirs)) <= 1e-9 if key == "eps" else mine == theirs
        if not same:
            shown = (lambda v: f"{float(v):.5g}") if key == "eps" else (lambda v: str(v)[:80])
            raise UserError(f"{path} does not belong to {what}: its {key} is {shown(mine)} but the report's is {shown(theirs)}",
                            "pass the per-sample results file written together with that report (--samples)")


def recorded_name(samples_path: str | Path, report_path: str | Path | None) -> str:
    """What a report records as its ``samples_file``: the path relative to the report's folder (so the pair can be
    moved together), or absolute when there is no report file."""
    samples_path = Path(samples_path).absolute()
    if report_path is None:
        return str(samples_path)
    return os.path.relpath(samples_path, Path(report_path).absolute().parent)


def baseline_samples_candidates(baseline_path: str | Path, baseline: Report) -> list[Path]:
    """Where the baseline's per-sample results are looked for when ``--baseline-samples`` is not given, in order:
    the ``samples_file`` the baseline report recorded (relative to the report's folder), then ``NAME.samples.jsonl``
    beside ``NAME.json``."""
    baseline_path = Path(baseline_path)
    found = [baseline_path.parent / baseline.samples_file] if baseline.samples_file else []
    return found + [baseline_path.with_suffix(".samples.jsonl")]


def load_baseline_samples(baseline_path: str | Path, baseline: Report,
                          explicit: str | Path | None = None) -> tuple[Path | None, SampleResults | None]:
    """The baseline's per-sample results, checked against the baseline report's identity; (None, None) when no file
    is given and none is found by the convention above (the drop gates then compare rates)."""
    if explicit is not None:
        path = Path(explicit)
    else:
        path = next((p for p in baseline_samples_candidates(baseline_path, baseline) if p.is_file()), None)
        if path is None:
            return None, None
    header, samples = read_samples(path)
    check_identity(header, baseline, path, f"the baseline report {baseline_path}")
    return path, samples


__all__ = ["FORMAT", "IDENTITY", "VERSION", "baseline_samples_candidates", "check_identity", "identity", "load_baseline_samples",
           "read_samples", "recorded_name", "write_samples"]
