"""Under GitHub Actions a usage error (exit 2) and a crash (exit 3) are named on the run's page: an ``::error``
annotation holding the one-line message, and a few lines in the step summary (issue 27).

Run as CI runs it, ``python -m hardenctl`` in a subprocess with pipes for stdout and stderr, so the streams, their
flushing and the exit code are the real ones.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# the same internal error test_cli_crash.py provokes in-process (api.evaluate replaced by a function that raises),
# here in the child process before the real `python -m hardenctl` entry point runs
CRASHING = (
    "import runpy, hardenctl.api.eval_request\n"
    "def broken(*args, **kwargs):\n"
    "    raise RuntimeError('something inside broke')\n"
    "hardenctl.api.eval_request.evaluate = broken\n"
    "runpy.run_module('hardenctl', run_name='__main__', alter_sys=True)\n"
)
QUICK = ("--data", "digits-test", "--attacks", "fgsm", "--eps", "0.1", "--n", "16", "--batch-size", "16", "--quiet")


def run(*args: object, summary: Path | None, tmp_path: Path, crash: bool = False, github: bool = True):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "HARDENCTL_"))}
    env.update(OMP_NUM_THREADS="1", HARDENCTL_LOG_DIR=str(tmp_path / "logs"))
    if github:
        env["GITHUB_ACTIONS"] = "true"
    if summary is not None:
        env["GITHUB_STEP_SUMMARY"] = str(summary)
    head = ["-c", CRASHING] if crash else ["-m", "hardenctl"]
    return subprocess.run(
        [sys.executable, *head, *map(str, args)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
    )


def test_exit_2_writes_an_error_annotation_and_a_step_summary(tmp_path):
    summary = tmp_path / "summary.md"
    summary.write_text("## an earlier step\n")
    result = run("eval", "models/missing.safetensors", *QUICK, summary=summary, tmp_path=tmp_path)
    assert result.returncode == 2
    line = "error: checkpoint not found: models/missing.safetensors; check the path"
    assert result.stderr.splitlines() == [line]  # still one line, no traceback
    assert result.stdout.splitlines() == [f"::error title=hardenctl eval%3A bad input (exit 2)::{line}"]
    text = summary.read_text()
    assert text.startswith("## an earlier step\n### hardenctl eval: bad input (exit 2)\n")  # appended, not replaced
    assert f"```text\n{line}\n```" in text and "Exit code 2" in text and "not a failed gate" in text


def test_exit_3_writes_an_error_annotation_and_a_summary_naming_the_log(tmp_path, digits_model_path):
    summary = tmp_path / "summary.md"
    result = run("eval", digits_model_path, *QUICK, "--json", summary=summary, tmp_path=tmp_path, crash=True)
    assert result.returncode == 3, result.stderr
    (log,) = (tmp_path / "logs").iterdir()
    assert result.stdout == ""  # with --json stdout is the report's; the runner reads commands on stderr too
    error, annotation = result.stderr.splitlines()
    assert error.startswith("internal error: RuntimeError: something inside broke;") and str(log) in error
    assert annotation == f"::error title=hardenctl eval%3A internal error (exit 3)::{error}"
    assert "Traceback" not in result.stderr and "Traceback (most recent call last)" in log.read_text()
    text = summary.read_text()
    assert text.startswith("### hardenctl eval: internal error (exit 3)\n") and f"\n{error}\n" in text
    assert f"The traceback is in `{log}`" in text and "Exit code 3" in text


@pytest.mark.parametrize("where", ["a folder", "under a file"])
def test_a_step_summary_that_cannot_be_written_changes_no_exit_code(tmp_path, where):
    """The annotation still names the failure; the summary's own failure is one stderr line, no traceback. (eval
    itself refuses such a $GITHUB_STEP_SUMMARY before any work, so the usage error here is the parser's.)"""
    (tmp_path / "summary").mkdir()
    (tmp_path / "file").write_text("")
    summary = tmp_path / "summary" if where == "a folder" else tmp_path / "file" / "summary.md"
    result = run("eval", "missing.safetensors", "--n", "many", summary=summary, tmp_path=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    error, warning = result.stderr.splitlines()
    assert error.startswith("error: Invalid value for") and "--n" in error
    reason = "Is a directory" if where == "a folder" else "Not a directory"
    assert warning.startswith("warning: could not append to the step summary") and reason in warning
    assert "exit code is unchanged" in warning
    assert result.stdout == f"::error title=hardenctl eval%3A bad input (exit 2)::{error}\n"


def test_outside_github_actions_there_is_no_annotation_and_no_summary(tmp_path):
    summary = tmp_path / "summary.md"
    result = run("eval", "missing.safetensors", *QUICK, summary=summary, tmp_path=tmp_path, github=False)
    assert result.returncode == 2 and result.stdout == "" and not summary.exists()
    assert len(result.stderr.splitlines()) == 1


def test_a_usage_error_from_the_parser_names_only_known_commands(tmp_path):
    summary = tmp_path / "summary.md"
    result = run("<b>nope</b>", summary=summary, tmp_path=tmp_path)
    assert result.returncode == 2
    assert result.stdout.startswith("::error title=hardenctl%3A bad input (exit 2)::error: No such command")
    assert summary.read_text().startswith("### hardenctl: bad input (exit 2)\n")


def test_no_arguments_at_all_is_exit_2_with_an_annotation(tmp_path):
    summary = tmp_path / "summary.md"
    result = run(summary=summary, tmp_path=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr + result.stdout
    assert "Usage" in result.stdout + result.stderr  # typer prints the help
    message = "error: no arguments given; `hardenctl --help` shows what hardenctl needs"
    assert result.stdout.splitlines()[-1] == f"::error title=hardenctl%3A bad input (exit 2)::{message}"
    assert f"```text\n{message}\n```" in summary.read_text()
