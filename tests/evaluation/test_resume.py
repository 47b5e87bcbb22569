"""``--resume-dir``/``--resume``: a killed evaluation continues from its last finished batch and ends with the
report and per-sample results of an uninterrupted run; a state from another evaluation is refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from testing_helpers import BufferWriter, finished_batches, read_adversarial, timeless

import hardenctl
from hardenctl.attacks import GradientStats
from hardenctl.errors import UserError
from hardenctl.evaluation import EvalConfig, evaluate
from hardenctl.evaluation.resume import EvalState, batch_numbers, state_files
from hardenctl.evaluation.samples import read_samples
from hardenctl.evaluation.suite import BatchResult
from hardenctl.options import EvalRun

# 32 samples in batches of 4: 8 batches of the standard suite, then 8 of the ε = 0.5 check
N, BATCHES = 32, 8
ARGS = [
    "--n",
    str(N),
    "--batch-size",
    "4",
    "--eps",
    "0.1",
    "--suite",
    "standard",
    "--apgd-steps",
    "3",
    "--square-queries",
    "10",
    "--device",
    "cpu",
    "--no-strict",
    "--quiet",
]
MAIN_STAGE = "attacks [linf eps=0.1]"


def without_seconds(report: dict) -> dict:
    return timeless(report)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, digits_model_path, digits_npz):
    """The reference: one uninterrupted in-process run (single-threaded, like the subprocesses) without any state."""
    from hardenctl.cli import main

    out = tmp_path_factory.mktemp("uninterrupted")
    code = main(
        [
            "eval",
            str(digits_model_path),
            "--data",
            str(digits_npz),
            *ARGS,
            "--report",
            str(out / "report.json"),
            "--samples",
            str(out / "samples.jsonl"),
            "--save-adversarial",
            str(out / "adversarial"),
        ]
    )
    assert code == 0
    return out


def assert_same_as(reference: Path, report: Path, samples: Path, adversarial: Path) -> None:
    assert without_seconds(json.loads(report.read_text())) == without_seconds(
        json.loads((reference / "report.json").read_text())
    )
    assert read_samples(samples)[1].rows() == read_samples(reference / "samples.jsonl")[1].rows()
    index, images = read_adversarial(adversarial)
    want_index, want_images = read_adversarial(reference / "adversarial")
    assert index.tolist() == want_index.tolist() == list(range(N)) and (images == want_images).all()


def wait_for_progress(process: subprocess.Popen, state_dir: Path, batches: int, deadline_s: float = 240) -> None:
    deadline = time.monotonic() + deadline_s
    while finished_batches(state_dir).get(MAIN_STAGE, 0) < batches:
        assert process.poll() is None, process.stderr.read().decode()[-3000:] if process.stderr else "exited"
        assert time.monotonic() < deadline
        time.sleep(0.02)


@pytest.mark.slow
def test_kill_9_mid_attack_then_resume_gives_the_same_report(uninterrupted, digits_model_path, digits_npz, tmp_path):
    outputs = [
        "--report",
        str(tmp_path / "report.json"),
        "--samples",
        str(tmp_path / "samples.jsonl"),
        "--save-adversarial",
        str(tmp_path / "adversarial"),
        "--resume-dir",
        str(tmp_path / "state"),
    ]
    command = [
        sys.executable,
        "-m",
        "hardenctl",
        "eval",
        str(digits_model_path),
        "--data",
        str(digits_npz),
        *ARGS,
        *outputs,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # bit-identical CPU results need the reference's thread count
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    wait_for_progress(process, tmp_path / "state", 2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = finished_batches(tmp_path / "state")
    assert 2 <= done[MAIN_STAGE] < BATCHES and not (tmp_path / "report.json").exists()  # killed mid-attack
    before = {p.name: p.stat().st_ino for p in (tmp_path / "adversarial").glob("adv_*.npz")}
    resumed = subprocess.run(command + ["--resume"], capture_output=True, text=True, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # it continued: the batches finished before the kill were not attacked again (their files were not rewritten)
    finished = sorted(before)[: done[MAIN_STAGE]]
    assert finished and all((tmp_path / "adversarial" / name).stat().st_ino == before[name] for name in finished)
    assert_same_as(uninterrupted, tmp_path / "report.json", tmp_path / "samples.jsonl", tmp_path / "adversarial")


@pytest.mark.slow
def test_a_killed_rank_resumes_in_another_number_of_processes(uninterrupted, digits_model_path, digits_npz, tmp_path):
    """torchrun, 2 gloo processes: SIGKILL rank 1 once it has finished batches; torchrun stops rank 0. Resumed in one
    process, which takes the union of both ranks' state files, the report is the uninterrupted one."""
    outputs = [
        "--report",
        str(tmp_path / "report.json"),
        "--samples",
        str(tmp_path / "samples.jsonl"),
        "--save-adversarial",
        str(tmp_path / "adversarial"),
        "--resume-dir",
        str(tmp_path / "state"),
    ]
    args = ["eval", str(digits_model_path), "--data", str(digits_npz), *ARGS, *outputs]
    worker = tmp_path / "worker.py"
    worker.write_text(
        textwrap.dedent(f"""
        import os, sys
        from hardenctl.cli import main
        open(os.path.join({str(tmp_path)!r}, "pid" + os.environ["RANK"]), "w").write(str(os.getpid()))
        sys.exit(main({args!r}))
    """)
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(worker)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    rank1 = tmp_path / "state" / "state-rank1-of2.pt"
    deadline = time.monotonic() + 300
    while not rank1.exists() or len(batch_numbers(rank1).get(MAIN_STAGE, [])) < 1:
        assert process.poll() is None, process.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.kill(int((tmp_path / "pid1").read_text()), signal.SIGKILL)
    assert process.wait(timeout=120) != 0 and not (tmp_path / "report.json").exists()
    finished = {
        number for path in state_files(tmp_path / "state") for number in batch_numbers(path).get(MAIN_STAGE, [])
    }
    assert 1 <= len(finished) < BATCHES and any(n % 2 for n in finished)  # rank 1's batches are odd

    before = {p.name: p.stat().st_ino for p in (tmp_path / "adversarial").glob("adv_*.npz")}
    resumed = subprocess.run(
        [sys.executable, "-m", "hardenctl", *args, "--resume"], capture_output=True, text=True, env=env
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # both ranks' finished batches were carried over, not attacked again (their files were not rewritten)
    carried = [f"adv_{4 * n:06d}-{4 * n + 3:06d}.npz" for n in sorted(finished)]
    assert all((tmp_path / "adversarial" / name).stat().st_ino == before[name] for name in carried)
    assert_same_as(uninterrupted, tmp_path / "report.json", tmp_path / "samples.jsonl", tmp_path / "adversarial")


def test_a_state_from_another_evaluation_is_one_line_exit_2(cli, digits_model_path, tmp_path):
    state = tmp_path / "state"
    quick = [
        digits_model_path,
        "--data",
        "digits-test",
        "--n",
        "12",
        "--batch-size",
        "4",
        "--attacks",
        "fgsm",
        "--eps",
        "0.1",
        "--quiet",
        "--resume-dir",
        state,
    ]
    code, _, err = cli("eval", *quick)
    assert code == 0, err
    for other, named in (
        (["--seed", "1"], "seed: 0 in the state, 1 now"),
        (["--eps", "0.05"], "eps: 0.1 in the state, 0.05 now"),
        (["--n", "8"], "data_sha256"),
    ):
        code, out, err = cli("eval", *quick, *other, "--resume", "--report", tmp_path / "report.json")
        assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
        assert err.startswith("error: ") and "is the state of another evaluation" in err and named in err, err
    code, _, err = cli("eval", *quick)  # a second fresh run into the same directory must say so
    assert code == 2 and "already holds an evaluation state" in err and "--resume" in err
    code, _, err = cli("eval", *quick[:-2], "--resume")
    assert code == 2 and "--resume needs --resume-dir" in err
    (state / "state-rank0-of1.pt").write_bytes(b"not a state")
    code, _, err = cli("eval", *quick, "--resume")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "not a hardenctl evaluation state" in err
    assert not (tmp_path / "report.json").exists()


class Interrupt(Exception):
    """Stands in for a kill: raised by the progress callback after some batches of one stage."""


def interrupted_after(stage: str, samples: int):
    def progress(name: str, done: int, total: int, metrics: dict | None = None) -> None:
        if name == stage and done >= samples:
            raise Interrupt

    return progress


SMALL = EvalConfig(
    n=36,
    batch_size=8,
    eps=0.1,
    attacks=["apgd-ce", "square"],
    apgd_steps=3,
    square_queries=10,
    eps_sweep=[0.05, 0.1],
    large_eps_samples=20,
)


@pytest.fixture(scope="module")
def small_run(digits_model_path):
    model = hardenctl.load_model(digits_model_path)
    data = hardenctl.load_data("digits-test", model, n=36)
    return model, data, evaluate(model, data, SMALL)


# (stage, samples after which it is interrupted, the first progress of each stage when resumed: None = nothing left
# to run). 36 samples in batches of 8 (the ε = 0.5 check: 20): a stage resumed after k batches first reports k * 8
# done (its start, with the carried batches counted)
INTERRUPTIONS = [
    ("attacks", 8, {"attacks": 8, "eps 0.05": 0}),
    ("eps 0.05", 20, {"attacks": None, "eps 0.05": 24, "eps 0.5 check": 0}),
    ("eps 0.5 check", 4, {"attacks": None, "eps 0.05": None, "eps 0.5 check": 8}),
    ("attacks", 36, {"attacks": None, "eps 0.05": 0}),
]


@pytest.mark.parametrize(
    "stage, samples, resumed_first", INTERRUPTIONS, ids=["suite", "sweep", "large-eps-check", "after-the-last-batch"]
)
def test_interrupted_in_any_stage_resumes_to_the_same_result(small_run, tmp_path, stage, samples, resumed_first):
    model, data, want = small_run
    config = SMALL
    with pytest.raises(Interrupt):
        evaluate(model, data, config, interrupted_after(stage, samples), run=EvalRun(resume_dir=tmp_path))
    (tmp_path / ".state-rank0-of1.pt.x1y2.tmp").write_bytes(b"half a file")  # what a kill during a write leaves
    first: dict[str, int] = {}
    got = evaluate(
        model,
        data,
        config,
        lambda name, done, total, metrics=None: first.setdefault(name, done),
        run=EvalRun(resume_dir=tmp_path, resume=True),
    )
    # it continued from the last finished batch: finished stages are not run again, the interrupted one carries its
    # batches
    assert {name: first.get(name) for name in resumed_first} == resumed_first
    assert without_seconds(json.loads(got.to_json())) == without_seconds(json.loads(want.to_json()))
    assert got.samples.rows() == want.samples.rows()
    assert [e["index"] for e in got.pictures.chosen()] == [e["index"] for e in want.pictures.chosen()]


def test_a_buffer_change_seen_before_the_kill_still_fails_the_check(digits_model_path, tmp_path):
    config = EvalConfig(n=16, batch_size=8, attacks=["fgsm"], eps=0.1, large_eps_samples=0)
    killed = BufferWriter(hardenctl.load_model(digits_model_path), only_attacked=True)
    data = hardenctl.load_data("digits-test", killed, n=16)
    with pytest.raises(Interrupt):  # after the last batch: the resumed run has nothing left to attack
        evaluate(killed, data, config, interrupted_after("attacks", 16), run=EvalRun(resume_dir=tmp_path))
    fresh = BufferWriter(
        hardenctl.load_model(digits_model_path), only_attacked=True
    )  # a new process reloads the model from its file
    report = evaluate(fresh, data, config, run=EvalRun(resume_dir=tmp_path, resume=True))
    check = {c.name: c for c in report.checks}["eval_mode_and_buffers_unchanged"]
    assert not check.passed and "calls" in check.detail


def batch(number: int, size: int = 4) -> BatchResult:
    return BatchResult(
        number,
        number * size,
        torch.ones(size),
        torch.zeros(size, dtype=torch.long),
        torch.ones(size, dtype=torch.bool),
        torch.zeros(size, dtype=torch.long),
        torch.full((size,), -1),
        [size],
        [GradientStats(size, 0, 0, 0)],
    )


def test_a_resumed_state_is_the_union_of_every_process_file(tmp_path):
    """Two ranks' files (batches 0, 2 and 1): one resumed process carries all three and rewrites only its own file."""
    key = {"seed": 0}
    for rank, numbers in ((0, [0, 2]), (1, [1])):
        state = EvalState(tmp_path, key, rank, 2)
        for number in numbers:
            state.record("s", batch(number))
        state.save()
    resumed = EvalState.open(tmp_path, key, resume=True)
    assert [b.number for b in resumed.carried("s", range(4))] == [0, 1, 2] and resumed.resumed_batches == 3
    resumed.save()
    assert [p.name for p in state_files(tmp_path)] == ["state-rank0-of1.pt", "state-rank0-of2.pt", "state-rank1-of2.pt"]
    with pytest.raises(UserError, match=r"seed: 0 in the state, 1 now"):
        EvalState.open(tmp_path, {"seed": 1}, resume=True)
