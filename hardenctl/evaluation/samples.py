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

The header is what lets a file be matched to its report: ``--baseline-samples`` (and ``compare``) refuses a file
whose identity (model and data sha256, ε, norm, suite, n, seed) is not its report's, before any row is read, and rows
that contradict the report (samples per class, the clean and robust counts). Every field of every line is checked
(types, ranges, NaN and Infinity refused), indexes run 0..n-1 once each, in order, and no line may pass
:data:`MAX_LINE_CHARS`. A file that is not one of ours, or is damaged, is a one-line
:class:`~hardenctl.errors.UserError` (exit 2) naming the file, the line and the field, never a traceback.

Finding a baseline's file (``--baseline old.json`` without ``--baseline-samples``): first the ``samples_file`` that
old.json recorded (``--samples`` stores it relative to the report's folder, so the two can be moved together), then
``old.samples.jsonl`` beside old.json. When neither exists the ``max_drop_*`` gates compare the two reports' rates,
and their ``basis`` says so.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..files import atomic_path
from ..report import Report, SampleResults
from ..report.common import clean_text
from ..report.fields import FLAG, TEXT, Kind, integer_in, is_integer, maybe, number_in, one_of, shown
from ..report.reader import parse_json

FORMAT = "hardenctl-samples"
VERSION = 1
IDENTITY = ("model_sha256", "data_sha256", "eps", "norm", "suite", "n", "seed")
ROW_FIELDS = tuple(SampleResults.__dataclass_fields__)
_FIX = "pass a per-sample results file written by `hardenctl eval --samples`"


def identity(report: Report) -> dict[str, Any]:
    """The header line: the fields that identify the report a samples file belongs to (``max_n``: the images a
    ``--sequential`` run that stopped early had planned; its rows are the images it evaluated, in index order)."""
    header = {"format": FORMAT, "version": VERSION, **{key: getattr(report, key) for key in IDENTITY}}
    if report.stopped_early:
        header["max_n"] = int(report.sequential["max_n"])
    return header


def write_samples(report: Report, path: str | Path) -> Path:
    """Write ``report.samples`` with its identity header to ``path``, atomically, one line at a time."""
    if report.samples is None:
        raise ValueError("this report carries no per-sample results (it was not made by hardenctl.evaluate)")
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(identity(report)) + "\n")
        for row in report.samples.rows():
            fh.write(json.dumps(row) + "\n")
    return Path(path)


# Why 64 KiB: a row is about 150 characters, and its longest field, source_id, is a file path (at most 4,096 bytes,
# 24 KiB when every byte is JSON-escaped); a longer line is damage, and is refused before it is held in memory.
MAX_LINE_CHARS = 64 * 1024
_CLASS_ID = integer_in(0)
# Per field: (test, what it must be), for the one-line error.
_ROW_TYPES: dict[str, Kind] = {
    "index": (is_integer, "an integer"),
    "source_id": TEXT,
    "label": (_CLASS_ID[0], "an integer >= 0 (a class id)"),
    "clean_prediction": (_CLASS_ID[0], "an integer >= 0 (a class id)"),
    "clean_correct": number_in(0, 1),
    "robust": FLAG,
    "broken_by": (maybe(TEXT)[0], "an attack name or null"),
    "adversarial_prediction": (_CLASS_ID[0], "an integer >= 0 (a class id)"),
}
assert set(_ROW_TYPES) == set(ROW_FIELDS), "SampleResults changed: update the samples file validation"
_HEADER_TYPES: dict[str, Kind] = {
    "model_sha256": maybe(TEXT),
    "data_sha256": TEXT,
    "norm": one_of("linf", "l2"),
    "suite": TEXT,
    "n": integer_in(1),
    "seed": integer_in(),
    "eps": number_in(0, 1e6),
}
assert set(_HEADER_TYPES) == set(IDENTITY), "the identity changed: update the header validation"


def _lines(fh: Any, name: str):
    """(line number, text) of each line, none longer than MAX_LINE_CHARS (read at most that much, so a file with no
    line breaks cannot fill the memory)."""
    number = 0
    while True:
        line = fh.readline(MAX_LINE_CHARS + 1)
        if not line:
            return
        number += 1
        if len(line) > MAX_LINE_CHARS:
            raise UserError(f"{name} is damaged: line {number} is longer than {MAX_LINE_CHARS:,} characters", _FIX)
        yield number, line


def _parse(line: str, name: str, number: int) -> dict[str, Any]:
    try:
        value = parse_json(line)
    except ValueError as exc:
        what = "is not JSON" if str(exc).startswith("not JSON") else f"is not JSON hardenctl writes ({exc})"
        raise UserError(f"{name} is not a hardenctl per-sample results file (line {number} {what})", _FIX) from None
    if not isinstance(value, dict):
        raise UserError(f"{name} is not a hardenctl per-sample results file (line {number} is not a JSON object)", _FIX)
    return value


def read_samples(
    path: str | Path, report: Report | None = None, what: str = "the baseline report"
) -> tuple[dict[str, Any], SampleResults]:
    """(header, per-sample results) from a ``--samples`` file; a one-line UserError naming the file, the line and the
    field when it is foreign or damaged: every row's fields of the right type, indexes 0..n-1 each once and in order,
    n rows. With ``report`` (``what`` names it), the file must belong to it: the header's identity is checked before
    any row is read (so n is the report's), and the rows must agree with its counts (:func:`check_agreement`)."""
    path = Path(path)
    name = clean_text(path)
    if path.is_dir():
        raise UserError(f"{name} is a folder, not a per-sample results file", _FIX)
    if not path.is_file():
        raise UserError(f"per-sample results file not found: {name}", _FIX)
    try:
        with open(path, encoding="utf-8") as fh:
            lines = _lines(fh, name)
            first = next(lines, None)
            if first is None:
                raise UserError(f"{name} is not a hardenctl per-sample results file (it is empty)", _FIX)
            header = _parse(first[1], name, 1)
            _check_header(header, name)
            if report is not None:
                check_identity(header, report, name, what)
            columns = _read_rows(lines, header["n"], name, _planned(header, name))
    except UnicodeDecodeError:
        raise UserError(f"{name} is not a hardenctl per-sample results file (not UTF-8 text)", _FIX) from None
    except OSError as exc:
        raise UserError(
            f"cannot read {name}: {exc.strerror or type(exc).__name__}", "check the path and permissions"
        ) from None
    samples = SampleResults(**columns)
    if report is not None:
        check_agreement(samples, report, name, what)
    return header, samples


def _planned(header: dict[str, Any], name: str) -> int | None:
    """``max_n`` of a sequential run that stopped early (None for every other file), checked."""
    if "max_n" not in header:
        return None
    max_n = header["max_n"]
    if not is_integer(max_n) or max_n <= header["n"]:
        raise UserError(
            f"{name} is damaged: its header's max_n is {shown(max_n)}, not a whole number above n = {header['n']}", _FIX
        )
    return int(max_n)


def _read_rows(lines: Any, n: int, name: str, planned: int | None = None) -> dict[str, list]:
    """The rows after the header, as columns: each field checked, index ``i`` on line ``i + 2``, exactly n rows (a
    sequential run that stopped early, ``planned`` images: increasing indexes below that)."""
    columns: dict[str, list] = {field: [] for field in ROW_FIELDS}
    rows = 0
    for number, line in lines:
        rows += 1
        if rows > n:  # count the rest without parsing them, for the message
            raise UserError(
                f"{name} is damaged: its header says n = {n} but it has {rows + sum(1 for _ in lines)} sample rows",
                _FIX,
            )
        if not line.strip():
            raise UserError(f"{name} is damaged: line {number} is empty", _FIX)
        row = _parse(line, name, number)
        for field in ROW_FIELDS:
            if field not in row:
                raise UserError(f"{name} is damaged: line {number} has no {field!r}", _FIX)
            test, expected = _ROW_TYPES[field]
            if not test(row[field]):
                raise UserError(
                    f"{name} is damaged: line {number}: {field} must be {expected}, not {shown(row[field])}", _FIX
                )
            columns[field].append(row[field])
        if planned is None:
            _check_index(row["index"], rows - 1, n, name, number)
        elif not (columns["index"][-2] if rows > 1 else -1) < row["index"] < planned:
            raise UserError(
                f"{name} is damaged: line {number} has index {row['index']}, not above the line before and "
                f"below max_n = {planned} (a sequential run's rows are in index order)",
                _FIX,
            )
    if rows != n:
        raise UserError(f"{name} is incomplete: its header says n = {n} but it has {rows} sample rows", _FIX)
    return columns


def _check_index(index: int, expected: int, n: int, name: str, number: int) -> None:
    """Rows are in evaluation order: the row on line ``number`` is sample ``expected``; say how it is wrong."""
    if index == expected:
        return
    if not 0 <= index < n:
        problem = f"has index {index}, outside 0..{n - 1} (the header's n = {n})"
    elif index < expected:
        problem = f"has index {index} again (it was on line {index + 2})"
    else:
        problem = f"has index {index}, expected {expected} (rows are in evaluation order)"
    raise UserError(f"{name} is damaged: line {number} {problem}", _FIX)


def _check_header(header: dict[str, Any], name: str) -> None:
    if header.get("format") != FORMAT:
        raise UserError(f"{name} is not a hardenctl per-sample results file (no '{FORMAT}' header line)", _FIX)
    version = header.get("version")
    if version != VERSION or isinstance(version, bool):
        newer = is_integer(version) and version > VERSION
        fix = "write it again with this hardenctl's `hardenctl eval --samples`"
        raise UserError(
            f"{name} has per-sample results format version {shown(version)}"
            + (", written by a newer hardenctl" if newer else "")
            + f"; this hardenctl reads version {VERSION}",
            f"upgrade hardenctl (pip install -U hardenctl) to read it, or {fix}" if newer else fix,
        )
    missing = [key for key in IDENTITY if key not in header]
    if missing:
        raise UserError(f"{name} is damaged: its header has no {missing[0]!r}", _FIX)
    for key in IDENTITY:
        test, expected = _HEADER_TYPES[key]
        if not test(header[key]):
            raise UserError(f"{name} is damaged: its header's {key} must be {expected}, not {shown(header[key])}", _FIX)
    if header["norm"] == "linf" and header["eps"] > 1:
        raise UserError(
            f"{name} is damaged: its header's eps must be in [0, 1] for linf, not {shown(header['eps'])}", _FIX
        )


def check_identity(header: dict[str, Any], report: Report, path: str | Path, what: str = "the baseline report") -> None:
    """Refuse (UserError) a samples file whose header does not identify ``report``, naming the first difference."""
    for key in IDENTITY:
        mine, theirs = header.get(key), getattr(report, key)
        same = abs(float(mine) - float(theirs)) <= 1e-9 if key == "eps" else mine == theirs
        if not same:
            value = (lambda v: f"{float(v):.5g}") if key == "eps" else (lambda v: clean_text(v)[:80])
            raise UserError(
                f"{clean_text(path)} does not belong to {clean_text(what)}: its {key} is {value(mine)} "
                f"but the report's is {value(theirs)}",
                "pass the per-sample results file written together with that report (--samples)",
            )


_AGREE_FIX = "pass the per-sample results file written together with that report (--samples), unedited"


def check_agreement(
    samples: SampleResults, report: Report, path: str | Path, what: str = "the baseline report"
) -> None:
    """Refuse (UserError) per-sample results that contradict the report they belong to: the number of samples of each
    class (``per_class``), the robust and the clean count (``counts``; the rates for a report without counts). A
    file edited after its report was written, or a header copied onto other rows, ends here."""
    refused = f"{clean_text(path)} does not agree with {clean_text(what)}: its rows have"
    if report.per_class:
        per_label = Counter(str(label) for label in samples.label)
        for key in sorted(set(per_label) | set(report.per_class)):
            expected = (report.per_class.get(key) or {}).get("n", 0)
            if per_label.get(key, 0) != expected:
                raise UserError(
                    f"{refused} {per_label.get(key, 0)} samples of class {clean_text(key)[:40]} but the "
                    f"report's per_class says {expected}",
                    _AGREE_FIX,
                )
    n, counts = len(samples), report.counts or {}
    for label, found, key, rate in (
        ("robust", sum(samples.robust), "robust_correct", report.robust_accuracy),
        ("correctly classified (clean)", sum(samples.clean_correct), "clean_correct", report.clean_accuracy),
    ):
        if key in counts:
            expected, source = counts[key], f"counts.{key}"
        else:
            expected, source = rate * n, f"{key.split('_')[0]}_accuracy × n"
        if abs(found - expected) > 1e-6 * max(n, 1):  # a randomised model's fractions of draws: a sum of floats
            raise UserError(
                f"{refused} {found:g} {label} samples but the report says {expected:g} ({source})", _AGREE_FIX
            )


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


def load_baseline_samples(
    baseline_path: str | Path, baseline: Report, explicit: str | Path | None = None, what: str = "the baseline report"
) -> tuple[Path | None, SampleResults | None]:
    """The baseline's per-sample results, checked against the baseline report (``what`` names it in errors, followed
    by its path): its identity and its counts; (None, None) when no file is given and none is found by the convention
    above (the drop gates then compare rates)."""
    if explicit is not None:
        path = Path(explicit)
    else:
        path = next((p for p in baseline_samples_candidates(baseline_path, baseline) if p.is_file()), None)
        if path is None:
            return None, None
    _, samples = read_samples(path, baseline, f"{what} {clean_text(baseline_path)}")
    return path, samples


__all__ = [
    "FORMAT",
    "IDENTITY",
    "MAX_LINE_CHARS",
    "VERSION",
    "baseline_samples_candidates",
    "check_agreement",
    "check_identity",
    "identity",
    "load_baseline_samples",
    "read_samples",
    "recorded_name",
    "write_samples",
]
