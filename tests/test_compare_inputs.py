"""Reports read back by `compare`, `card` and `eval --baseline`, hostile or damaged (issue 28): bad input is one line
and exit 2 with nothing written, never exit 1 (a failed gate) or 3 (a bug of ours); compare names OLD and NEW."""

from __future__ import annotations

import json
import shutil
from itertools import count
from pathlib import Path

import pytest
from hostile_reports import CLI_SETTINGS, damaged, damaged_lines, write_lines, write_report
from hypothesis import given
from hypothesis import strategies as st

TINY = [
    "--data",
    "digits-test",
    "--n",
    "8",
    "--attacks",
    "fgsm",
    "--batch-size",
    "8",
    "--eps",
    "0.1",
    "--no-strict",
    "--quiet",
]
NAN, INF = float("nan"), float("inf")
_names = count()


@pytest.fixture(scope="module")
def reports(digits_model_path, tmp_path_factory) -> dict[str, Path]:
    """A tiny evaluation of the digits model (8 images, FGSM) with its per-sample results, and a copy as NEW."""
    from hardenctl.cli import main

    folder = tmp_path_factory.mktemp("compare_inputs")
    assert (
        main(
            [
                str(a)
                for a in (
                    "eval",
                    digits_model_path,
                    *TINY,
                    "--report",
                    folder / "old.json",
                    "--samples",
                    folder / "old.samples.jsonl",
                )
            ]
        )
        == 0
    )
    shutil.copy(folder / "old.json", folder / "new.json")
    shutil.copy(folder / "old.samples.jsonl", folder / "new.samples.jsonl")
    new = (folder / "old.json").read_text().replace("old.samples.jsonl", "new.samples.jsonl")
    (folder / "new.json").write_text(new)
    return {"folder": folder, "old": folder / "old.json", "new": folder / "new.json", "model": digits_model_path}


def lines_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def edited(reports: dict, change, name: str | None = None) -> Path:
    """A copy of OLD beside it (so its per-sample file is found) with ``change(data)`` applied."""
    data = json.loads(reports["old"].read_text())
    change(data)
    return write_report(reports["folder"] / (name or f"edited{next(_names)}.json"), data)


def one_line_exit_2(result: tuple[int, str, str]) -> str:
    code, _, err = result
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, (code, err)
    return err


CASES = [  # (what testers gave, the change, what the one line says)
    ("Infinity robust accuracy", lambda d: d.update(robust_accuracy=INF), "robust_accuracy is Infinity"),
    ("NaN robust accuracy", lambda d: d.update(robust_accuracy=NAN), "robust_accuracy is NaN"),
    ("a string accuracy", lambda d: d.update(clean_accuracy="0.9"), 'clean_accuracy is "0.9", not a number in [0, 1]'),
    ("accuracy 5.0", lambda d: d.update(robust_accuracy=5.0), "robust_accuracy is 5.0, not a number in [0, 1]"),
    ("per_class: [1]", lambda d: d.update(per_class=[1]), "per_class is a list, not an object"),
    (
        "5,000-deep list",
        lambda d: d.update(extra="<<deep list>>"),
        "is not a JSON report (nested more than 32 levels deep)",
    ),
    (
        "schema 2.0",
        lambda d: d.update(schema_version="2.0"),
        'schema_version is "2.0": it was written by a newer hardenctl',
    ),
    (
        "schema 0.1",
        lambda d: d.update(schema_version="0.1"),
        'schema_version is "0.1", a version this hardenctl does not know',
    ),
    ("missing field", lambda d: d.pop("eps"), "eps is missing (hardenctl always writes it)"),
]


@pytest.mark.parametrize("what, change, says", CASES, ids=[c[0] for c in CASES])
def test_compare_refuses_a_damaged_report_in_one_line_naming_file_and_field(reports, cli, tmp_path, what, change, says):
    bad = edited(reports, change)
    for old, new in ((reports["old"], bad), (bad, reports["new"])):
        err = one_line_exit_2(
            cli("compare", old, new, "--max-drop", "0.01", "--report", tmp_path / "c.json", "--quiet")
        )
        assert f"{bad}" in err and says in err, err
    assert not (tmp_path / "c.json").exists()


@pytest.mark.parametrize("what, change, says", CASES, ids=[c[0] for c in CASES])
def test_card_refuses_a_damaged_report_and_writes_nothing(reports, cli, tmp_path, what, change, says):
    bad = edited(reports, change)
    err = one_line_exit_2(cli("card", bad, "--out", tmp_path / "card", "--robustbench-json", tmp_path / "rb.json"))
    assert says in err and str(bad) in err
    assert list(tmp_path.iterdir()) == []


def test_a_folder_given_as_a_report_is_called_a_folder(reports, cli, tmp_path):
    err = one_line_exit_2(cli("compare", reports["old"], tmp_path, "--quiet"))
    assert f"{tmp_path} is a folder, not a report file" in err and "does not exist" not in err
    assert "is a folder" in one_line_exit_2(cli("card", tmp_path, "--out", tmp_path / "card"))


def test_compare_names_old_and_new_by_their_files(reports, cli):
    other = edited(reports, lambda d: d.update(eps=0.2, samples_file=None), "other_eps.json")
    err = one_line_exit_2(cli("compare", reports["old"], other, "--quiet"))
    assert f"{reports['old']} was made with ε 0.1 but {other} was made with 0.2" in err
    assert "this evaluation" not in err and "baseline" not in err


def test_compare_names_both_files_when_their_samples_differ(reports, cli):
    """NEW's per-sample file with two labels swapped (its class counts still agree with its report): the pairing
    finds the first sample whose label differs and names both files."""
    header, *rows = lines_of(reports["folder"] / "new.samples.jsonl")
    first = next(i for i, r in enumerate(rows) if r["label"] != rows[0]["label"])
    rows[0]["label"], rows[first]["label"] = rows[first]["label"], rows[0]["label"]
    write_lines(reports["folder"] / "swapped.samples.jsonl", [header, *rows])
    err = one_line_exit_2(
        cli(
            "compare",
            reports["old"],
            reports["new"],
            "--new-samples",
            reports["folder"] / "swapped.samples.jsonl",
            "--quiet",
        )
    )
    assert f"{reports['old']}'s per-sample results have label" in err and f"but {reports['new']} has" in err
    assert "this evaluation" not in err


def test_a_failed_max_drop_gate_of_compare_names_old(reports):
    from hardenctl.compare import compare

    better = edited(reports, lambda d: d.update(robust_accuracy=1.0, samples_file=None), "better.json")
    result = compare(better, reports["new"], max_drop=0.0)
    line = result.describe_failure(result.failed_gates[0])
    assert line.startswith("gate failed: max_drop_robust_accuracy: dropped") and f"from {better}" in line


def test_damaged_per_sample_files_are_one_line_naming_file_line_and_field(reports, cli):
    header, *rows = lines_of(reports["folder"] / "old.samples.jsonl")
    cases = {
        "nan": (
            [header, {**rows[0], "clean_correct": NAN}, *rows[1:]],
            "line 2: clean_correct must be a number in [0, 1], not NaN",
        ),
        "range": ([header, *rows[:3], {**rows[3], "index": 99}, *rows[4:]], "line 5 has index 99, outside 0..7"),
        "count": (
            [header, *rows[:-1], {**rows[-1], "robust": not rows[-1]["robust"]}],
            "does not agree with the report",
        ),
    }
    for name, (lines, says) in cases.items():
        path = write_lines(reports["folder"] / f"{name}.samples.jsonl", lines)
        err = one_line_exit_2(cli("compare", reports["old"], reports["new"], "--old-samples", path, "--quiet"))
        assert str(path) in err and says in err, err


def test_a_nan_baseline_is_refused_before_any_model_is_loaded(reports, cli, tmp_path, monkeypatch):
    import hardenctl.api

    loaded = []
    monkeypatch.setattr(hardenctl.api, "load_model", lambda *a, **k: loaded.append(a) or pytest.fail("model loaded"))
    for change, says in (
        (lambda d: d.update(robust_accuracy=NAN), "robust_accuracy is NaN"),
        (lambda d: d.update(clean_accuracy=INF), "clean_accuracy is Infinity"),
        (lambda d: d.update(per_class={"0": {"n": "x"}}), 'per_class.0.n is "x"'),
    ):
        baseline = edited(reports, change)
        err = one_line_exit_2(
            cli(
                "eval",
                reports["model"],
                *TINY,
                "--baseline",
                baseline,
                "--max-drop",
                "0.01",
                "--report",
                tmp_path / "r.json",
            )
        )
        assert str(baseline) in err and says in err
    assert loaded == [] and not (tmp_path / "r.json").exists()


# -- property: whatever the reports hold, the outcome is a result or one line with exit 2 -----------------------------
def outcome(result: tuple[int, str, str], outputs: list[Path]) -> None:
    code, _, err = result
    assert code in (0, 2), (code, err)  # never 1 (no gate can fail here) or 3 (a bug)
    assert "Traceback" not in err
    if code == 2:
        one_line_exit_2(result)
        assert not any(path.exists() for path in outputs)


@pytest.fixture(scope="module")
def old_data(reports) -> dict:
    return json.loads(reports["old"].read_text())


@CLI_SETTINGS
@given(data=st.data())
def test_compare_and_card_of_any_damaged_report_end_in_a_result_or_one_line(
    reports, old_data, cli, tmp_path_factory, data
):
    report = data.draw(damaged(old_data))
    header, *rows = lines_of(reports["folder"] / "new.samples.jsonl")
    samples = data.draw(damaged_lines(header, rows))
    folder = tmp_path_factory.mktemp("cli")
    new = write_report(reports["folder"] / f"damaged{next(_names)}.json", report)
    new_samples = write_lines(folder / "new.samples.jsonl", samples)
    out = folder / "c.json"
    outcome(
        cli(
            "compare", reports["old"], new, "--new-samples", new_samples, "--max-drop", "1", "--report", out, "--quiet"
        ),
        [out],
    )
    outcome(
        cli("card", new, "--out", folder / "card", "--robustbench-json", folder / "rb.json"),
        [folder / "card", folder / "rb.json"],
    )


@CLI_SETTINGS
@given(data=st.data())
def test_eval_with_any_damaged_baseline_ends_in_a_result_or_one_line(reports, old_data, cli, tmp_path_factory, data):
    baseline = write_report(reports["folder"] / f"baseline{next(_names)}.json", data.draw(damaged(old_data)))
    out = tmp_path_factory.mktemp("eval") / "r.json"
    outcome(cli("eval", reports["model"], *TINY, "--baseline", baseline, "--max-drop", "1", "--report", out), [out])
