"""Per-sample results files: round trip, identity header, and one-line refusals of foreign or damaged files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hostile_reports import READER_SETTINGS, damaged_lines, eval_report, sample_rows
from hostile_reports import write_lines as write_hostile
from hypothesis import given
from hypothesis import strategies as st

from hardenctl.errors import UserError
from hardenctl.evaluation.samples import (
    FORMAT,
    check_identity,
    identity,
    load_baseline_samples,
    read_samples,
    recorded_name,
    write_samples,
)
from hardenctl.report import Report, SampleResults


def make_samples(robust: list[bool], clean: list[float] | None = None) -> SampleResults:
    n = len(robust)
    clean = clean if clean is not None else [1.0] * n
    return SampleResults(
        index=list(range(n)),
        source_id=[f"row {i}" for i in range(n)],
        label=[i % 3 for i in range(n)],
        clean_prediction=[i % 3 for i in range(n)],
        clean_correct=clean,
        robust=list(robust),
        broken_by=[None if r else "pgd" for r in robust],
        adversarial_prediction=[i % 3 if r else (i + 1) % 3 for i, r in enumerate(robust)],
    )


def make_report(samples: SampleResults, **changes) -> Report:
    n = len(samples)
    values = dict(
        schema_version="1.0",
        clean_accuracy=sum(samples.clean_correct) / n,
        robust_accuracy=sum(samples.robust) / n,
        attacks={"pgd": sum(samples.robust) / n},
        per_class={},
        n=n,
        eps=8 / 255,
        norm="linf",
        suite="custom",
        seed=0,
        model_sha256="m" * 64,
        data_sha256="d" * 64,
        versions={},
        normalization={},
        seconds=1.0,
        samples=samples,
    )
    values.update(changes)
    return Report(**values)


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_round_trip_with_identity_header(tmp_path):
    report = make_report(make_samples([True, False, True, False], clean=[1.0, 1.0, 1.0, 0.0]))
    path = write_samples(report, tmp_path / "r.samples.jsonl")
    header, *rows = lines(path)
    assert header == {
        "format": FORMAT,
        "version": 1,
        "model_sha256": "m" * 64,
        "data_sha256": "d" * 64,
        "eps": 8 / 255,
        "norm": "linf",
        "suite": "custom",
        "n": 4,
        "seed": 0,
    }
    assert rows == report.samples.rows()
    assert set(rows[0]) == {
        "index",
        "source_id",
        "label",
        "clean_prediction",
        "clean_correct",
        "robust",
        "broken_by",
        "adversarial_prediction",
    }
    read_header, samples = read_samples(path)
    assert read_header == header and samples == report.samples
    check_identity(read_header, report, path)  # its own report: accepted


def test_writing_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "s.jsonl"
    report = make_report(make_samples([True, False]))
    write_samples(report, path)
    before = path.read_bytes()

    def broken_rows():
        yield {"index": 0}
        raise RuntimeError("disk full")

    monkeypatch.setattr(SampleResults, "rows", lambda self: broken_rows())
    with pytest.raises(RuntimeError):
        write_samples(report, path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == [
        "s.jsonl"
    ]  # no half file, no temp left


def write_lines(path: Path, items: list) -> Path:
    path.write_text("".join((item if isinstance(item, str) else json.dumps(item)) + "\n" for item in items))
    return path


def good_lines(n: int = 3) -> list:
    report = make_report(make_samples([True] * n))
    return [identity(report), *report.samples.rows()]


@pytest.mark.parametrize(
    "name,change,message",
    [
        (
            "report",
            lambda ls: [{"schema_version": "1.0", "clean_accuracy": 0.9}],
            "not a hardenctl per-sample results file",
        ),
        ("text", lambda ls: ["index,label", "0,3"], "line 1 is not JSON"),
        ("list", lambda ls: [[1, 2, 3]], "not a JSON object"),
        ("empty", lambda ls: [], "empty"),
        ("version", lambda ls: [{**ls[0], "version": 2}, *ls[1:]], "format version 2"),
        ("header", lambda ls: [{k: v for k, v in ls[0].items() if k != "data_sha256"}, *ls[1:]], "no 'data_sha256'"),
        ("truncated", lambda ls: ls[:-1], "header says n = 3 but it has 2"),
        ("extra row", lambda ls: [*ls, {**ls[1], "index": 3}], "header says n = 3 but it has 4"),
        ("order", lambda ls: [ls[0], ls[2], ls[1], ls[3]], "line 2 has index 1, expected 0"),
        (
            "missing",
            lambda ls: [ls[0], {k: v for k, v in ls[1].items() if k != "robust"}, *ls[2:]],
            "line 2 has no 'robust'",
        ),
        ("type", lambda ls: [ls[0], ls[1], {**ls[2], "robust": "yes"}, ls[3]], "line 3: robust must be true or false"),
        (
            "range",
            lambda ls: [ls[0], {**ls[1], "clean_correct": 1.5}, *ls[2:]],
            "clean_correct must be a number in [0, 1]",
        ),
        ("bool label", lambda ls: [ls[0], {**ls[1], "label": True}, *ls[2:]], "label must be an integer"),
        ("blank", lambda ls: [ls[0], "", *ls[1:]], "line 2 is empty"),
        ("garbage row", lambda ls: [ls[0], "{not json", *ls[1:]], "line 2 is not JSON"),
    ],
)
def test_foreign_or_damaged_files_are_one_line_errors(tmp_path, name, change, message):
    path = write_lines(tmp_path / "s.jsonl", change(good_lines()))
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]")) as caught:
        read_samples(path)
    assert "\n" not in str(caught.value) and "--samples" in str(caught.value)


def test_binary_and_missing_files_are_one_line_errors(tmp_path):
    (tmp_path / "s.parquet").write_bytes(b"PAR1\xff\xfe\x00\x01")
    with pytest.raises(UserError, match="not a hardenctl per-sample results file"):
        read_samples(tmp_path / "s.parquet")
    with pytest.raises(UserError, match="not found"):
        read_samples(tmp_path / "absent.jsonl")


@pytest.mark.parametrize(
    "key,value",
    [
        ("model_sha256", "x" * 64),
        ("data_sha256", "x"),
        ("eps", 4 / 255),
        ("norm", "l2"),
        ("suite", "quick"),
        ("n", 5),
        ("seed", 1),
    ],
)
def test_a_file_of_another_report_is_refused_naming_the_difference(tmp_path, key, value):
    report = make_report(make_samples([True, False, True]))
    header, _ = read_samples(write_samples(report, tmp_path / "s.jsonl"))
    with pytest.raises(UserError, match=f"does not belong to the baseline report: its {key} is"):
        check_identity(header, make_report(make_samples([True, False, True]), **{key: value}), tmp_path / "s.jsonl")


def test_baseline_samples_are_found_by_convention(tmp_path):
    report = make_report(make_samples([True, False]))
    assert load_baseline_samples(tmp_path / "old.json", report) == (None, None)  # nothing there: rates
    write_samples(report, tmp_path / "old.samples.jsonl")  # NAME.samples.jsonl beside NAME.json
    path, samples = load_baseline_samples(tmp_path / "old.json", report)
    assert path == tmp_path / "old.samples.jsonl" and samples == report.samples
    (tmp_path / "reports").mkdir()
    recorded = recorded_name(tmp_path / "per-sample" / "x.jsonl", tmp_path / "reports" / "old.json")
    assert recorded == str(Path("..") / "per-sample" / "x.jsonl")  # relative to the report: the pair can move together
    report.samples_file = recorded
    write_samples(report, tmp_path / "per-sample" / "x.jsonl")
    path, _ = load_baseline_samples(tmp_path / "reports" / "old.json", report)  # the recorded file wins
    assert path == tmp_path / "reports" / ".." / "per-sample" / "x.jsonl"
    other = make_report(make_samples([True, False]), seed=7)
    with pytest.raises(UserError, match="its seed is 7"):  # found by convention, but another report's: refused
        write_samples(other, tmp_path / "old.samples.jsonl")
        load_baseline_samples(tmp_path / "old.json", make_report(make_samples([True, False])))
    with pytest.raises(UserError, match="not found"):  # an explicit file must exist
        load_baseline_samples(tmp_path / "old.json", report, tmp_path / "absent.jsonl")


# -- issue 28: every field of every line checked, indexes in range and once, the rows agree with their report ------


def hostile_file(tmp_path: Path, change) -> Path:
    """The per-sample results of hostile_reports.eval_report (n = 10, agreeing with its counts), with ``change``."""
    return write_hostile(tmp_path / "s.jsonl", change([identity(eval_report()), *sample_rows()]))


def refusal(path: Path, report: Report | None = None) -> str:
    with pytest.raises(UserError) as caught:
        read_samples(path, report)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(str(path) if "not found" not in message else "per-sample results")
    return message


def row(ls: list, at: int, **changes) -> list:
    return [*ls[:at], {**ls[at], **changes}, *ls[at + 1 :]]


@pytest.mark.parametrize(
    "name, change, says",
    [
        ("index past n", lambda ls: row(ls, 3, index=42), "line 4 has index 42, outside 0..9 (the header's n = 10)"),
        ("negative index", lambda ls: row(ls, 1, index=-1), "line 2 has index -1, outside 0..9"),
        ("index twice", lambda ls: row(ls, 3, index=1), "line 4 has index 1 again (it was on line 3)"),
        (
            "NaN clean",
            lambda ls: row(ls, 2, clean_correct=float("nan")),
            "line 3: clean_correct must be a number in [0, 1], not NaN",
        ),
        (
            "Infinity clean",
            lambda ls: row(ls, 2, clean_correct=float("inf")),
            "clean_correct must be a number in [0, 1], not Infinity",
        ),
        (
            "string label",
            lambda ls: row(ls, 2, label="3"),
            'line 3: label must be an integer >= 0 (a class id), not "3"',
        ),
        (
            "negative prediction",
            lambda ls: row(ls, 2, adversarial_prediction=-2),
            "adversarial_prediction must be an integer >= 0",
        ),
        ("float index", lambda ls: row(ls, 1, index=0.0), "line 2: index must be an integer, not 0.0"),
        ("broken_by number", lambda ls: row(ls, 1, broken_by=3), "broken_by must be an attack name or null, not 3"),
        (
            "header eps NaN",
            lambda ls: row(ls, 0, eps=float("nan")),
            "its header's eps must be a number in [0, 1e+06], not NaN",
        ),
        ("header eps linf 2", lambda ls: row(ls, 0, eps=2.0), "its header's eps must be in [0, 1] for linf, not 2.0"),
        ("header n true", lambda ls: row(ls, 0, n=True), "its header's n must be a whole number >= 1, not true"),
        ("header n string", lambda ls: row(ls, 0, n="10"), 'its header\'s n must be a whole number >= 1, not "10"'),
        ("header norm", lambda ls: row(ls, 0, norm="l3"), 'its header\'s norm must be "linf" or "l2", not "l3"'),
        (
            "header version true",
            lambda ls: row(ls, 0, version=True),
            "format version true; this hardenctl reads version 1",
        ),
        ("header version 2", lambda ls: row(ls, 0, version=2), "format version 2, written by a newer hardenctl"),
        (
            "deep line",
            lambda ls: [ls[0], "[" * 5000 + "]" * 5000, *ls[2:]],
            "line 2 is not JSON hardenctl writes (nested more",
        ),
        (
            "huge number",
            lambda ls: [ls[0], '{"index": ' + "9" * 5000 + "}", *ls[2:]],
            "line 2 is not JSON hardenctl writes",
        ),
        ("endless line", lambda ls: [ls[0], "x" * 70_000, *ls[2:]], "line 2 is longer than 65,536 characters"),
    ],
)
def test_damaged_rows_and_headers_name_the_file_line_and_field(tmp_path, name, change, says):
    assert says in refusal(hostile_file(tmp_path, change))


def test_a_folder_is_named_as_one(tmp_path):
    assert refusal(tmp_path).startswith(f"{tmp_path} is a folder, not a per-sample results file")


@pytest.mark.parametrize(
    "change, says",
    [
        (
            lambda ls: row(ls, 8, robust=True),
            "its rows have 6 robust samples but the report says 5 (counts.robust_correct)",
        ),
        (
            lambda ls: row(ls, 10, clean_correct=1.0),
            "its rows have 10 correctly classified (clean) samples but the report says 9",
        ),
        (lambda ls: row(ls, 1, label=1), "its rows have 3 samples of class 0 but the report's per_class says 4"),
        (lambda ls: row(ls, 1, label=7), "its rows have 3 samples of class 0 but the report's per_class says 4"),
    ],
)
def test_rows_that_contradict_their_report_are_refused(tmp_path, change, says):
    message = refusal(hostile_file(tmp_path, change), eval_report())
    assert "does not agree with the baseline report" in message and says in message
    read_samples(hostile_file(tmp_path, lambda ls: ls), eval_report())  # unchanged, it agrees


def test_a_report_without_counts_is_checked_against_its_rates(tmp_path):
    report = eval_report(counts={})
    message = refusal(hostile_file(tmp_path, lambda ls: row(ls, 8, robust=True)), report)
    assert "but the report says 5 (robust_accuracy × n)" in message


def test_the_header_is_matched_to_the_report_before_any_row_is_read(tmp_path):
    """A header claiming a billion samples is refused for not being the report's, not read to the end."""
    path = hostile_file(tmp_path, lambda ls: [{**ls[0], "n": 10**9}, *(["{not json"] * 3)])
    message = refusal(path, eval_report())
    assert "does not belong to the baseline report: its n is 1000000000 but the report's is 10" in message


def test_compare_and_baseline_name_the_report_the_file_belongs_to(tmp_path):
    path = hostile_file(tmp_path, lambda ls: row(ls, 8, robust=True))
    with pytest.raises(UserError, match=r"does not agree with the report new\.json: its rows have 6 robust"):
        load_baseline_samples("new.json", eval_report(), path, "the report")


@READER_SETTINGS
@given(lines=damaged_lines(identity(eval_report()), sample_rows()))
def test_any_damaged_samples_file_is_read_whole_or_refused_in_one_line(tmp_path_factory, lines):
    path = write_hostile(tmp_path_factory.mktemp("s") / "s.jsonl", lines)
    report = eval_report()
    try:
        header, samples = read_samples(path, report)
    except UserError as exc:
        assert "\n" not in str(exc) and str(exc).startswith(str(path)), str(exc)
        return
    assert samples.index == list(range(report.n)) and sum(samples.robust) == report.counts["robust_correct"]
    assert all(0 <= c <= 1 for c in samples.clean_correct) and header["n"] == report.n


@READER_SETTINGS
@given(data=st.data())
def test_nan_or_an_infinity_in_any_number_is_refused_naming_the_line_and_field(tmp_path_factory, data):
    lines = [identity(eval_report()), *sample_rows()]
    at = data.draw(st.integers(0, len(lines) - 1))
    field = data.draw(
        st.sampled_from(
            ["eps", "n", "seed"]
            if at == 0
            else ["index", "label", "clean_prediction", "clean_correct", "adversarial_prediction"]
        )
    )
    value = data.draw(st.sampled_from([float("nan"), float("inf"), float("-inf")]))
    token = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}[str(value)]
    lines[at][field] = value
    message = refusal(write_hostile(tmp_path_factory.mktemp("s") / "s.jsonl", lines), eval_report())
    where = f"its header's {field}" if at == 0 else f"line {at + 1}: {field}"
    assert f"{where} must be " in message and f", not {token}; " in message
