"""The one validating reader for reports read back (`compare`, `card`, `eval --baseline`): every damaged, foreign or
hostile report is one line naming the file and the field (UserError, exit 2), never a traceback or a wrong number."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hostile_reports import READER_SETTINGS, damaged, eval_dict, eval_report, harden_dict, write_report
from hypothesis import given
from hypothesis import strategies as st

from hardenctl.errors import UserError
from hardenctl.report import load_report, read_report_json, reader, render_markdown, render_table, report_from_dict


def refused(path: Path, read=load_report) -> str:
    """The one-line message reading ``path`` is refused with."""
    with pytest.raises(UserError) as caught:
        read(path)
    message = str(caught.value)
    assert "\n" not in message and "\r" not in message
    return message


def test_a_report_hardenctl_writes_reads_back_as_it_was(tmp_path):
    report = eval_report()
    (tmp_path / "r.json").write_text(report.to_json())
    again = load_report(tmp_path / "r.json")
    assert again.to_json() == report.to_json()
    assert read_report_json(tmp_path / "r.json") == json.loads(report.to_json())
    write_report(tmp_path / "h.json", harden_dict())
    assert read_report_json(tmp_path / "h.json") == harden_dict()


def set_path(data: dict, path: str, value) -> dict:
    """``data`` with the field at ``path`` (``per_class.0.n``, ``checks.1.value``) set, or deleted (``DELETE``)."""
    *parents, last = path.split(".")
    target = data
    for key in parents:
        target = target[int(key)] if isinstance(target, list) else target[key]
    key = int(last) if isinstance(target, list) else last
    if value is DELETE:
        del target[key]
    else:
        target[key] = value
    return data


DELETE = object()
NAN, INF = float("nan"), float("inf")

# (field, value, what the message says after "FILE: "): one per way testers found a report to hurt a reader
BAD_FIELDS = [
    ("robust_accuracy", "abc", 'robust_accuracy is "abc", not a number in [0, 1]'),
    ("robust_accuracy", INF, "robust_accuracy is Infinity, which is not a JSON number"),
    ("robust_accuracy", NAN, "robust_accuracy is NaN, which is not a JSON number"),
    ("clean_accuracy", 5.0, "clean_accuracy is 5.0, not a number in [0, 1]"),
    ("clean_accuracy", -0.1, "clean_accuracy is -0.1, not a number in [0, 1]"),
    ("clean_accuracy", True, "clean_accuracy is true, not a number in [0, 1]"),
    ("per_class", [1], "per_class is a list, not an object of class id"),
    ("per_class.0", 1, "per_class.0 is 1, not an object"),
    ("per_class.0.n", "4", 'per_class.0.n is "4", not a whole number in [0, 10]'),
    ("per_class.0.n", 11, "per_class.0.n is 11, not a whole number in [0, 10]"),
    ("per_class.1.n", 7, "per_class counts 11 samples in all, more than the report's n = 10"),
    ("per_class.0.name", 3, "per_class.0.name is 3, not a string"),
    ("per_class.0.robust_correct", 5, "per_class.0.robust_correct is 5, not a whole number in [0, 4]"),
    ("per_class.0.clean_interval", [0.9, 0.1], "per_class.0.clean_interval is a list, not a pair [low, high]"),
    ("n", 0, "n is 0, not a whole number >= 1"),
    ("n", 10.0, "n is 10.0, not a whole number >= 1"),
    ("eps", -1, "eps is -1, not a number in [0, 1]"),
    ("eps", 2, "eps is 2, not a number in [0, 1]"),
    ("norm", "l3", 'norm is "l3", not "linf" or "l2"'),
    ("attacks.fgsm", "0.5", 'attacks.fgsm is "0.5", not a number in [0, 1]'),
    ("counts.robust_correct", 11, "counts.robust_correct is 11, not a whole number in [0, 10]"),
    ("counts.robust_correct", -1, "counts.robust_correct is -1, not a whole number in [0, 10]"),
    ("counts.n", 12, "counts.n is 12, not 10 (the report's n)"),
    ("intervals.robust_accuracy", [0.2, 1.5], "intervals.robust_accuracy is a list, not a pair [low, high]"),
    ("checks", {"a": 1}, "checks is an object, not a list of sanity checks"),
    ("checks.0", "x", 'checks[0] is "x", not an object (sanity checks)'),
    ("checks.1.value", "x", 'checks[1].value is "x", not a number or null'),
    ("gates.0.passed", "yes", 'gates[0].passed is "yes", not true or false'),
    ("model.arch", ["resnet"], "model.arch is a list, not a string"),
    ("model_sha256", "x" * 20_000, f'model_sha256 is "{"x" * 38}…, not a string'),
    ("normalization.mean", [0.5, -INF], "normalization.mean[1] is -Infinity, which is not a JSON number"),
    ("extra.protected.robust_accuracy", 2, "extra.protected.robust_accuracy is 2, not a number in [0, 1] or null"),
    ("extra.paired.robust.mcnemar_p", "1", 'extra.paired.robust.mcnemar_p is "1", not a number in [0, 1]'),
    ("work.fgsm.forward_passes", -3, "work.fgsm.forward_passes is -3, not a whole number >= 0"),
    ("eps_sweep.1.robust_accuracy", None, "eps_sweep[1].robust_accuracy is null, not a number in [0, 1]"),
    ("robust_accuracy", DELETE, "robust_accuracy is missing (hardenctl always writes it)"),
    ("per_class.0.n", DELETE, "per_class.0.n is missing"),
]


@pytest.mark.parametrize("field, value, says", BAD_FIELDS, ids=[f"{f}={str(v)[:12]}" for f, v, _ in BAD_FIELDS])
def test_each_damaged_field_is_named_with_the_file_and_refused(tmp_path, field, value, says):
    path = write_report(tmp_path / "old.json", set_path(eval_dict(), field, value))
    message = refused(path)
    assert message.startswith(f"{path}: {says}"), message
    assert message.endswith("(re-run it if the file was edited)")  # the fix
    assert refused(path, read_report_json) == message  # the card reads through the same checks


@pytest.mark.parametrize("field", ["hardened.robust_accuracy", "input.per_class.1.n", "other"])
def test_a_harden_report_names_the_evaluation_the_field_is_in(tmp_path, field):
    data = harden_dict()
    set_path(data, field, NAN if field.endswith("accuracy") else "x")
    message = refused(write_report(tmp_path / "h.json", data), read_report_json)
    assert message.startswith(f"{tmp_path / 'h.json'}: {field} is "), message


@pytest.mark.parametrize(
    "text, says",
    [
        ("[" * 5000 + "]" * 5000, "is not a JSON report (nested more than 32 levels deep)"),
        ('{"extra": ' + '{"a": ' * 40 + "1" + "}" * 41, "extra" + ".a" * 31 + " is nested more than 32 levels deep"),
        ('{"n": ' + "9" * 5000 + "}", "is not a JSON report (it holds a number with thousands of digits)"),
        ("not json", "is not a JSON report (not JSON: Expecting value at line 1, column 1)"),
        ("[1, 2]", "is not a hardenctl report (its JSON is a list)"),
        ('{"a": 1}', "is not a hardenctl report (no schema_version, clean_accuracy or robust_accuracy)"),
    ],
)
def test_deep_huge_or_foreign_json_is_refused_without_a_recursion_error(tmp_path, text, says):
    (tmp_path / "r.json").write_text(text)
    assert says in refused(tmp_path / "r.json")


def test_a_file_too_large_for_a_report_is_refused_before_it_is_read(tmp_path, monkeypatch):
    with open(tmp_path / "big.json", "wb") as fh:
        fh.truncate(reader.MAX_REPORT_BYTES + 1)  # a sparse file: no disk used
    read = []
    monkeypatch.setattr(reader, "parse_json", lambda text: read.append(text))
    assert "big.json is larger than 32 MB, more than any hardenctl report" in refused(tmp_path / "big.json")
    assert read == []


def test_paths_that_are_not_report_files(tmp_path):
    assert refused(tmp_path).startswith(f"{tmp_path} is a folder, not a report file; pass the report.json inside it")
    assert "does not exist" in refused(tmp_path / "absent.json")
    (tmp_path / "latin1.json").write_bytes(b'{"suite": "caf\xe9"}')
    assert "is not a JSON report (not UTF-8 text)" in refused(tmp_path / "latin1.json")
    odd = tmp_path / "two\nlines.json"
    odd.write_text("{}")
    assert "two\\nlines.json" in refused(odd)  # the file's name is data too: one line, escaped


@pytest.mark.parametrize(
    "version, says",
    [
        (
            "2.0",
            ': schema_version is "2.0": it was written by a newer hardenctl (this one reads "1.0"); upgrade hardenctl',
        ),
        ("1.1", ': schema_version is "1.1": it was written by a newer hardenctl'),
        ("0.1", ': schema_version is "0.1", a version this hardenctl does not know (it reads "1.0")'),
        ("harden-1.0", " is a harden report"),  # a harden report's version: not an evaluation to compare with
        (1.0, ': schema_version is 1.0, not a version such as "1.0"'),
        (DELETE, ": schema_version is missing"),
    ],
)
def test_schema_versions_other_than_this_hardenctl_s_are_named(tmp_path, version, says):
    path = write_report(tmp_path / "r.json", set_path(eval_dict(), "schema_version", version))
    assert refused(path).startswith(f"{path}{says}")


def test_harden_report_versions_are_checked_too(tmp_path):
    newer = write_report(tmp_path / "h.json", {**harden_dict(), "schema_version": "harden-2.0"})
    assert 'schema_version is "harden-2.0": it was written by a newer hardenctl' in refused(newer, read_report_json)
    inner = harden_dict()
    inner["hardened"]["schema_version"] = "3.0"
    message = refused(write_report(tmp_path / "i.json", inner), read_report_json)
    assert 'hardened.schema_version is "3.0": it was written by a newer hardenctl' in message
    from hardenctl.training.report import SCHEMA_VERSION

    assert reader.HARDEN_SCHEMA_VERSION == SCHEMA_VERSION  # the reader's copy (report/ may not import training/)


def test_an_older_version_is_migrated_before_it_is_checked(tmp_path, monkeypatch):
    """The migration hook, with a made-up version 0.9 that called robust_accuracy "adversarial_accuracy"."""

    def from_0_9(data: dict) -> dict:
        data = dict(data, schema_version="1.0")
        data["robust_accuracy"] = data.pop("adversarial_accuracy")
        return data

    old = eval_dict()
    old["adversarial_accuracy"] = old.pop("robust_accuracy")
    path = write_report(tmp_path / "old.json", {**old, "schema_version": "0.9"})
    assert 'schema_version is "0.9", a version this hardenctl does not know' in refused(path)
    monkeypatch.setitem(reader.MIGRATIONS, "0.9", from_0_9)
    assert load_report(path).robust_accuracy == 0.5
    monkeypatch.setitem(reader.MIGRATIONS, "0.8", lambda data: {**data, "schema_version": "0.9"})  # a chain of two
    write_report(path, {**old, "schema_version": "0.8"})
    assert load_report(path).to_json() == eval_report().to_json()
    monkeypatch.setitem(reader.MIGRATIONS, "0.9", lambda data: {**data, "schema_version": "0.8"})  # a faulty loop ends
    assert 'schema_version is "0.' in refused(path)


def test_load_report_refuses_a_harden_report_and_report_from_dict_checks_too(tmp_path):
    path = write_report(tmp_path / "h.json", harden_dict())
    assert refused(path).startswith(f"{path} is a harden report")
    with pytest.raises(UserError, match=r"^the report: robust_accuracy is NaN"):
        report_from_dict({**eval_dict(), "robust_accuracy": NAN})
    with pytest.raises(UserError, match=r"^input of run 3: n is missing"):
        report_from_dict({k: v for k, v in eval_dict().items() if k != "n"}, "input of run 3")


def test_keys_a_newer_hardenctl_adds_are_left_alone(tmp_path):
    data = {**eval_dict(), "a_new_section": {"anything": [1, {"deep": "x"}]}}
    assert load_report(write_report(tmp_path / "r.json", data)).to_json() == eval_report().to_json()


def test_a_report_written_before_counts_and_work_were_recorded_still_reads(tmp_path):
    data = eval_dict()
    for key in ("counts", "work", "execution", "attack_list", "eps_sweep", "extra", "intervals", "interval_method"):
        data.pop(key)
    for entry in data["per_class"].values():
        for key in ("clean_correct", "robust_correct", "clean_interval", "robust_interval"):
            entry.pop(key)
    assert load_report(write_report(tmp_path / "r.json", data)).counts == {}


# -- property: whatever a report holds, reading it gives a usable report or one line ------------------------------
@READER_SETTINGS
@given(data=damaged(eval_dict()))
def test_any_damaged_eval_report_is_read_whole_or_refused_in_one_line(tmp_path_factory, data):
    path = write_report(tmp_path_factory.mktemp("p") / "r.json", data)
    try:
        report = load_report(path)
    except UserError as exc:
        message = str(exc)
        assert "\n" not in message and message.startswith(str(path)), message
        return
    json.dumps(report.to_dict(), allow_nan=False)  # strict JSON: no NaN or infinity got through
    render_markdown(report), render_table(report), report.intervals()  # every renderer can use it


def numbers_in(value, prefix: tuple = ()) -> list[tuple]:
    """The path of every number in a JSON value."""
    if isinstance(value, dict):
        return [path for key, child in value.items() for path in numbers_in(child, prefix + (key,))]
    if isinstance(value, list):
        return [path for index, child in enumerate(value) for path in numbers_in(child, prefix + (index,))]
    return [prefix] if isinstance(value, (int, float)) and not isinstance(value, bool) else []


def spelled(path: tuple) -> str:
    return "".join(f"[{key}]" if isinstance(key, int) else f".{key}" for key in path).lstrip(".")


@READER_SETTINGS
@given(st.data())
def test_nan_or_an_infinity_anywhere_is_refused_naming_where(tmp_path_factory, data):
    """Not only where a command reads a number: a NaN left anywhere would reach a renderer, a JSON output or jq."""
    report = harden_dict()
    path = data.draw(st.sampled_from(numbers_in(report)))
    value = data.draw(st.sampled_from([float("nan"), float("inf"), float("-inf")]))
    target = report
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    file = write_report(tmp_path_factory.mktemp("p") / "h.json", report)
    token = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}[str(value)]
    assert refused(file, read_report_json).startswith(f"{file}: {spelled(path)} is {token}")


@READER_SETTINGS
@given(data=damaged(harden_dict(), mutations=4))
def test_any_damaged_harden_report_is_read_whole_or_refused_in_one_line(tmp_path_factory, data):
    path = write_report(tmp_path_factory.mktemp("p") / "h.json", data)
    try:
        result = read_report_json(path)
    except UserError as exc:
        message = str(exc)
        assert "\n" not in message and message.startswith(str(path)), message
        return
    from hardenctl.report.reader import build_report

    sides = [result["input"], result["hardened"]] if "input" in result and "hardened" in result else [result]
    for side in sides:
        render_markdown(build_report(side))
    json.dumps(result, allow_nan=False)  # strict JSON: no NaN or infinity got through
