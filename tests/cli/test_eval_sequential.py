"""``hardenctl eval --sequential`` from the command line: refused settings, the verdict and its exit code, every output
saying after how many images it was decided, torchrun ranks stopping together, and the Python API."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import hardenctl

EVAL = ["--data", "digits-test", "--n", "240", "--batch-size", "24", "--attacks", "fgsm", "--eps", "0.1"]


def one_line(code: int, err: str, *named: str) -> None:
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
    for word in named:
        assert word in err, err


@pytest.mark.parametrize(
    "extra, named",
    [
        (["--sequential"], ["no gate is set", "--min-robust-acc"]),
        (["--sequential", "--min-robust-acc", "0.5", "--alpha", "0.6"], ["--alpha must be in (0, 0.5]"]),
        (["--sequential", "--min-robust-acc", "0.5", "--alpha", "0"], ["--alpha must be in (0, 0.5]"]),
        (["--sequential", "--min-robust-acc", "0.5", "--eps-sweep", "0,0.1"], ["--eps-sweep"]),
        (["--min-robust-acc", "0.5", "--alpha", "0.1"], ["--alpha", "--sequential"]),
    ],
)
def test_settings_a_sequential_gate_cannot_use_are_refused_before_loading(
    cli, digits_model_path, tmp_path, extra, named
):
    code, _, err = cli("eval", digits_model_path, *EVAL, *extra, "--report", tmp_path / "r.json")
    one_line(code, err, *named)
    assert not (tmp_path / "r.json").exists()


@pytest.fixture(scope="module")
def full_run(digits_model_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    code = hardenctl.cli.main(
        [
            "eval",
            str(digits_model_path),
            *EVAL,
            "--report",
            str(out / "full.json"),
            "--samples",
            str(out / "full.samples.jsonl"),
            "--quiet",
        ]
    )
    assert code == 0
    return json.loads((out / "full.json").read_text()), out


def test_an_early_fail_is_exit_1_and_every_output_says_when_it_was_decided(
    cli, digits_model_path, full_run, tmp_path, monkeypatch
):
    full, _ = full_run
    threshold = round(full["robust_accuracy"] + 0.3, 3)
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "summary.md"))
    files = {suffix: tmp_path / f"r.{suffix}" for suffix in ("json", "md", "html", "xml")}
    code, out, err = cli(
        "eval",
        digits_model_path,
        *EVAL,
        "--sequential",
        "--min-robust-acc",
        threshold,
        "--report",
        files["json"],
        "--markdown",
        files["md"],
        "--html",
        files["html"],
        "--junit",
        files["xml"],
        "--samples",
        tmp_path / "r.samples.jsonl",
        "--pictures",
        "0",
    )
    assert code == 1, err
    report = json.loads(files["json"].read_text())
    decided = report["sequential"]["decided_at"]
    assert report["n"] == decided < 240 and report["sequential"]["max_n"] == 240
    phrase = f"decided after {decided} of 240 images"
    gate_line = next(line for line in err.splitlines() if line.startswith("gate failed: min_robust_acc"))
    assert phrase in gate_line and "anytime-valid bounds" in gate_line
    annotation = next(
        line for line in out.splitlines() if line.startswith("::error title=hardenctl gate failed%3A min_robust_acc")
    )
    assert phrase in annotation
    for suffix in ("md", "html", "xml"):
        assert phrase in files[suffix].read_text(), suffix
    assert phrase in (tmp_path / "summary.md").read_text()
    assert "n=72 of 240 (sequential)".replace("72", str(decided)) in out  # the console table's title
    rows = (tmp_path / "r.samples.jsonl").read_text().splitlines()
    assert len(rows) == 1 + decided and json.loads(rows[0])["max_n"] == 240


def test_an_early_pass_is_exit_0(cli, digits_model_path, full_run):
    full, _ = full_run
    code, _, err = cli(
        "eval",
        digits_model_path,
        *EVAL,
        "--sequential",
        "--min-robust-acc",
        round(full["robust_accuracy"] - 0.3, 3),
        "--gate-on",
        "lower",
        "--quiet",
    )
    assert code == 0, err


def test_a_paired_gate_is_decided_against_a_full_baseline(cli, digits_model_path, full_run, tmp_path):
    full, folder = full_run
    code, _, err = cli(
        "eval",
        digits_model_path,
        *EVAL,
        "--sequential",
        "--baseline",
        folder / "full.json",
        "--max-drop",
        "0.2",
        "--report",
        tmp_path / "r.json",
        "--quiet",
    )
    assert code == 0, err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["n"] < 240 and {g["name"] for g in report["gates"]} >= {
        "max_drop_robust_accuracy",
        "max_drop_clean_accuracy",
    }
    assert report["extra"]["paired"]["n"] == report["n"]  # the images evaluated, paired with the baseline's


def test_a_baseline_that_stopped_early_is_refused_naming_both_counts(cli, digits_model_path, full_run, tmp_path):
    full, _ = full_run
    assert (
        cli(
            "eval",
            digits_model_path,
            *EVAL,
            "--sequential",
            "--min-robust-acc",
            round(full["robust_accuracy"] - 0.3, 3),
            "--report",
            tmp_path / "early.json",
            "--samples",
            tmp_path / "early.samples.jsonl",
            "--quiet",
        )[0]
        == 0
    )
    early = json.loads((tmp_path / "early.json").read_text())
    code, _, err = cli("eval", digits_model_path, *EVAL, "--baseline", tmp_path / "early.json", "--max-drop", "0.1")
    one_line(code, err, f"results for {early['n']} of its 240 images")


@pytest.mark.slow
def test_torchrun_ranks_stop_at_the_same_round_as_one_process(digits_model_path, full_run, tmp_path):
    full, _ = full_run
    args = [
        str(digits_model_path),
        *EVAL[:-4],
        "--attacks",
        "pgd",
        "--eps",
        "0.1",
        "--sequential",
        "--min-robust-acc",
        str(round(full["robust_accuracy"] + 0.2, 3)),
        "--device",
        "cpu",
        "--quiet",
        "--no-strict",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args[args.index("--n")] = "-n"  # torchrun reads --n as its own --nnodes
    for name, launcher in (
        ("two", [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]),
        ("one", [sys.executable]),
    ):
        run = subprocess.run(
            [*launcher, "-m", "hardenctl", "eval", *args, "--report", str(tmp_path / f"{name}.json")],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )
        assert run.returncode == 1, run.stderr[-3000:]
    two, one = (json.loads((tmp_path / f"{name}.json").read_text()) for name in ("two", "one"))
    # two processes: one batch each per round, so rounds are twice as large; the decisions agree with one process's
    assert two["sequential"]["rounds"][0]["n"] == 2 * one["sequential"]["rounds"][0]["n"] == 48
    assert two["gates"][0]["passed"] is one["gates"][0]["passed"] is False and two["n"] < 240


def test_the_python_api_takes_the_gate_options(digits_model_path):
    model = hardenctl.load_model(digits_model_path)
    options = hardenctl.GateOptions(min_robust_acc=0.95)
    report = hardenctl.evaluate(
        model, "digits-test", n=240, batch_size=24, attacks=["fgsm"], eps=0.1, sequential=options
    )
    (gate, checks) = hardenctl.gate(report, options)
    assert report.stopped_early and gate.basis == "sequential" and not gate.passed
