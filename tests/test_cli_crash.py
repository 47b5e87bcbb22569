"""A crash never looks like a failed gate: exit 3, one line naming the log file, the traceback in it (issue 19, 5).

Every report already computed is still written before the exit.
"""

from __future__ import annotations

import json

import pytest

import hardenctl.api
import hardenctl.api.eval_request
import hardenctl.demo
import hardenctl.report.outputs
from hardenctl.errors import EXIT_INTERNAL
from hardenctl.evaluation.samples import read_samples

QUICK = ("--data", "digits-test", "--attacks", "fgsm", "--eps", "0.1", "--n", "16", "--batch-size", "16", "--quiet")


@pytest.fixture
def log_dir(tmp_path, monkeypatch):
    logs = tmp_path / "logs"
    monkeypatch.setenv("HARDENCTL_LOG_DIR", str(logs))
    monkeypatch.delenv("HARDENCTL_DEBUG", raising=False)
    return logs


def broken(*args, **kwargs):
    raise RuntimeError("something inside broke\n(on two lines)")


def assert_one_line_and_a_log(err: str, log_dir) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    (log,) = log_dir.iterdir()
    assert (
        str(log) in lines[0]
        and "internal error" in lines[0]
        and "RuntimeError: something inside broke (on two lines)" in lines[0]
    )
    assert "not a failed gate" in lines[0] and "--debug" in lines[0]
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "RuntimeError: something inside broke" in text
    return text


def test_a_crash_in_eval_exits_3_with_one_line_and_the_traceback_in_a_log(
    cli, log_dir, digits_model_path, monkeypatch, tmp_path
):
    monkeypatch.setattr(hardenctl.api.eval_request, "evaluate", broken)
    code, out, err = cli(
        "eval", digits_model_path, *QUICK, "--report", tmp_path / "report.json", "--min-robust-acc", "0.9"
    )
    assert code == EXIT_INTERNAL == 3
    text = assert_one_line_and_a_log(err, log_dir)
    assert "in broken" in text and "command: hardenctl eval" in text
    assert not (tmp_path / "report.json").exists()  # nothing was computed, so nothing is written


def test_debug_prints_the_traceback_too(cli, log_dir, digits_model_path, monkeypatch):
    monkeypatch.setattr(hardenctl.api.eval_request, "evaluate", broken)
    code, _, err = cli("eval", digits_model_path, *QUICK, "--debug")
    assert code == 3 and "Traceback (most recent call last)" in err and "in broken" in err
    assert err.strip().splitlines()[-1].startswith("internal error: RuntimeError")


def test_a_crash_in_harden_and_demo_exits_3(cli, log_dir, digits_model_path, tmp_path, monkeypatch):
    monkeypatch.setattr(hardenctl.api, "harden", broken)
    code, _, err = cli("harden", digits_model_path, "--data", "digits-train", "--out", tmp_path / "out", "--quiet")
    assert code == 3
    assert_one_line_and_a_log(err, log_dir)
    monkeypatch.setattr(hardenctl.demo, "make_demo_model", broken)
    code, _, err = cli("demo", "--out", tmp_path / "demo", "--quiet")
    assert code == 3 and err.strip().splitlines()[-1].startswith("internal error: RuntimeError")


def test_an_error_writing_the_markdown_still_writes_json_junit_and_samples_and_the_failed_gate_stands(
    cli, log_dir, digits_model_path, tmp_path, monkeypatch
):
    monkeypatch.setattr(hardenctl.report.outputs, "render_markdown", broken)
    files = {name: tmp_path / name for name in ("report.json", "report.md", "report.xml", "samples.jsonl")}
    code, _, err = cli(
        "eval",
        digits_model_path,
        *QUICK,
        "--report",
        files["report.json"],
        "--markdown",
        files["report.md"],
        "--junit",
        files["report.xml"],
        "--samples",
        files["samples.jsonl"],
        "--min-robust-acc",
        "0.99",
    )
    assert code == 1  # the verdict outranks the files (issue 28): a failed gate is never reported as a crash
    gate_line, markdown_line = err.strip().splitlines()
    assert gate_line.startswith("gate failed: min_robust_acc")
    (log,) = log_dir.iterdir()
    assert (
        markdown_line.startswith(
            f"error: could not write {files['report.md']} (RuntimeError: something inside broke "
            "(on two lines); traceback in "
        )
        and str(log) in markdown_line
    )
    assert (
        markdown_line.endswith("the verdict stands: exit 1") and "Traceback (most recent call last)" in log.read_text()
    )
    report = json.loads(files["report.json"].read_text())
    assert report["n"] == 16 and report["samples_file"] == "samples.jsonl" and not report["gates"][0]["passed"]
    assert len(read_samples(files["samples.jsonl"])[1]) == 16 and files["report.xml"].exists()
    assert not files["report.md"].exists()


def test_a_crash_while_gating_still_writes_the_computed_report(cli, log_dir, digits_model_path, tmp_path, monkeypatch):
    monkeypatch.setattr(hardenctl.api.eval_request, "gate", broken)
    code, _, err = cli("eval", digits_model_path, *QUICK, "--report", tmp_path / "report.json")
    assert code == 3
    assert_one_line_and_a_log(err, log_dir)
    assert json.loads((tmp_path / "report.json").read_text())["n"] == 16


def test_user_errors_keep_exit_2_and_no_log(cli, log_dir, digits_model_path):
    code, _, err = cli("eval", digits_model_path, *QUICK, "--min-robust-acc", "2")
    assert code == 2 and "fraction" in err and not log_dir.exists()
