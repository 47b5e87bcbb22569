"""Progress in a CI log: plain lines at every stage and attack boundary, a heartbeat at least every 30 s, GitHub
groups, and silence with --quiet. The line logic runs on a fake clock; the CLI runs with a pipe as stderr."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from hardenctl.cli.progress import LogProgress, duration


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def lines_of(github: bool = False, describe=None) -> tuple[LogProgress, list[str], Clock]:
    clock, lines = Clock(), []
    return LogProgress(lines.append, github=github, describe=describe, clock=clock, heartbeat=False), lines, clock


def test_a_stage_prints_its_start_its_end_and_a_status_line_once_30_seconds_passed():
    progress, lines, clock = lines_of()
    progress("attacks", 0, 1000)
    clock.now += 10
    progress("attacks", 128, 1000)  # quiet: 10 s since the last line
    clock.now += 25
    progress("attacks", 256, 1000)  # 35 s since the last line: a status line with done/total, elapsed and time left
    clock.now += 65
    progress("attacks", 1000, 1000)
    assert lines == [
        "attacks: started, 0/1000",
        "attacks: 256/1000 (26%), 35s elapsed, about 1m42s left",
        "attacks: 1000/1000 done in 1m40s",
    ]


def test_every_attack_boundary_gets_a_line():
    progress, lines, clock = lines_of()
    progress("attacks", 0, 64)
    clock.now += 1
    progress("attacks", 0, 64, {"detail": "batch 1/2: apgd-ce done, 20 of 32 still robust"})
    assert lines[-1] == "attacks: 0/64 (0%) (batch 1/2: apgd-ce done, 20 of 32 still robust), 1s elapsed"


def test_the_heartbeat_speaks_when_nothing_reports_for_30_seconds():
    clock, lines = Clock(), []
    progress = LogProgress(lines.append, clock=clock, interval=0.05)
    try:
        progress("attacks", 0, 10)
        clock.now += 31
        deadline = time.monotonic() + 5
        while len(lines) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        progress.close()
    assert lines[:2] == ["attacks: started, 0/10", "attacks: 0/10 (0%), 31s elapsed"]
    assert not any(t.name == "hardenctl-progress" for t in threading.enumerate())  # close() stops it


def test_between_stages_the_heartbeat_says_what_finished_last():
    progress, lines, clock = lines_of()
    progress("epoch 1/2", 10, 10)
    clock.now += 40
    assert progress._status() == "working, 40s elapsed; last: epoch 1/2 finished"


def test_what_runs_after_a_stage_is_said_until_its_summary_comes():
    """harden: the epoch's steps are done, the monitor scores it (minutes of PGD on a CPU), then its line comes."""
    progress, lines, clock = lines_of(describe=lambda m: "held-out 40%" if "robust" in m else None)
    progress("epoch 1/2", 2, 2)
    clock.now += 5
    progress("epoch 1/2", 2, 2, {"detail": "scoring the epoch"})
    clock.now += 40
    heartbeat = progress._status()
    progress("epoch 1/2", 2, 2, {"robust": 0.4})
    assert lines[-2:] == ["working, scoring the epoch, 5s elapsed; last: epoch 1/2 finished", "epoch 1/2: held-out 40%"]
    assert heartbeat == "working, scoring the epoch, 45s elapsed; last: epoch 1/2 finished"
    assert progress._status() == "working, 45s elapsed; last: epoch 1/2 finished"


def test_github_actions_folds_each_stage_and_prints_its_end_after_the_fold():
    progress, lines, clock = lines_of(
        github=True, describe=lambda m: f"held-out {m['robust']}" if "robust" in m else None
    )
    progress("epoch 1/2", 1, 2, {"loss": 0.5})
    progress("epoch 1/2", 2, 2, {"loss": 0.4})
    progress("epoch 1/2", 2, 2, {"loss": 0.4, "robust": "40%"})
    progress("attacks", 0, 8)
    progress.close()
    assert lines == [
        "::group::epoch 1/2",
        "epoch 1/2: started, 0/2",
        "::endgroup::",
        "epoch 1/2: 2/2 done in 0s",
        "epoch 1/2: held-out 40%",
        "::group::attacks",
        "attacks: started, 0/8",
        "::endgroup::",
    ]


def test_a_stage_run_again_under_the_same_name_starts_anew():
    """harden evaluates the input and the hardened model: two 'attacks' stages in a row."""
    progress, lines, clock = lines_of()
    progress("attacks", 8, 8)
    progress("attacks", 0, 8)
    assert lines == ["attacks: started, 0/8", "attacks: 8/8 done in 0s", "attacks: started, 0/8"]


@pytest.mark.parametrize("seconds, text", [(0.4, "0s"), (59, "59s"), (61, "1m01s"), (3599, "59m59s"), (3720, "1h02m")])
def test_durations_read_short(seconds, text):
    assert duration(seconds) == text


def run_piped(args: list[str], **env: str) -> subprocess.CompletedProcess:
    """The CLI as a CI job runs it: stdout and stderr are pipes, not a terminal."""
    environ = {k: v for k, v in os.environ.items() if k not in ("GITHUB_ACTIONS", "GITHUB_STEP_SUMMARY")}
    return subprocess.run(
        [sys.executable, "-m", "hardenctl", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**environ, "OMP_NUM_THREADS": "1", **env},
    )


EVAL = ["--data", "digits-test", "--n", "24", "--batch-size", "12", "--attacks", "fgsm,pgd", "--eps", "0.1"]


def test_eval_in_a_log_prints_plain_lines_at_every_attack_boundary(digits_model_path):
    result = run_piped(["eval", str(digits_model_path), *EVAL])
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert "attacks: started, 0/24" in lines and "attacks: 24/24 done in" in result.stderr
    boundaries = [line for line in lines if line.startswith("attacks:") and " done, " in line]
    assert len(boundaries) == 4  # 2 batches x 2 attacks
    assert "batch 2/2: pgd done" in boundaries[-1] and "12/24 (50%)" in boundaries[-1] and "left" in boundaries[-1]
    assert "\x1b[" not in result.stderr and "━" not in result.stderr  # no terminal codes, no bars in a log


def test_eval_under_github_actions_folds_the_stages(digits_model_path, tmp_path):
    result = run_piped(
        ["eval", str(digits_model_path), *EVAL], GITHUB_ACTIONS="true", GITHUB_STEP_SUMMARY=str(tmp_path / "summary.md")
    )
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines.count("::group::attacks") == 1 and lines.count("::endgroup::") == lines.count(
        "::group::attacks"
    ) + sum(line.startswith("::group::eps") for line in lines)
    assert lines.index("::group::attacks") < lines.index("attacks: started, 0/24") < lines.index("::endgroup::")


def test_quiet_stays_silent_in_a_log(digits_model_path):
    result = run_piped(["eval", str(digits_model_path), *EVAL, "--quiet"])
    assert result.returncode == 0 and result.stderr == ""


def test_harden_in_a_log_prints_each_epoch_and_each_evaluation(digits_model_path, tmp_path):
    result = run_piped(
        [
            "harden",
            str(digits_model_path),
            "--recipe",
            "pgd-at",
            "--data",
            "digits-train",
            "--epochs",
            "2",
            "--eval-data",
            "digits-test",
            "--eval-n",
            "12",
            "--suite",
            "quick",
            "--eps",
            "0.1",
            "--lr",
            "0.01",
            "--set",
            "attack_steps=1",
            "--set",
            "monitor_n=32",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    for epoch in (1, 2):
        assert f"epoch {epoch}/2: started, 0/" in result.stderr
        assert any(line.startswith(f"epoch {epoch}/2: loss ") and "held-out clean/robust" in line for line in lines)
    assert sum(line == "attacks: started, 0/12" for line in lines) == 2  # the input and the hardened model
