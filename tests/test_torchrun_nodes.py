"""Two torchrun nodes (two agents rendezvousing through c10d on 127.0.0.1, one gloo process each) against one process,
and torchrun's own restarts (``--max-restarts=1``) after a worker is SIGKILLed mid-run: ``eval --resume-dir D --resume``
and ``harden --resume`` finish with the results of an uninterrupted run.

Every attempt of a restarted job shares the agent's TCP store with the dead attempt; the process group used to be
built on it as it was, so a rank could read a dead process's address ("Gloo connectFullMesh failed ... Connection
refused", exit 1: ``hardenctl.distributed.attempt_store``). Each node's ``harden`` gets its own ``--out``, as two
machines without a shared disk would: only rank 0 writes checkpoints, and the other node resumes from rank 0's.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from testing_helpers import ddp_harden_args, timeless

from hardenctl.demo import DIGITS_MEAN, DIGITS_STD
from hardenctl.evaluation.samples import read_samples
from hardenctl.models import create_timm_model, save_model, wrap_model
from hardenctl.training import read_checkpoint_state

pytestmark = pytest.mark.slow

EVAL_ARGS = [
    "-n",
    "24",
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
# the DDP comparison of tests/test_harden.py: a GroupNorm model and lr 1e-4, so float summation order stays small
HARDEN_ARGS = [*ddp_harden_args(epochs=2), "--seed", "0"]

# Runs the CLI with "{rank}" in its arguments replaced by the process's rank. With a trigger (a Python expression),
# rank 1 SIGKILLs itself once it holds, once per job: the marker file keeps the restarted attempt alive.
WORKER = textwrap.dedent("""
    import os, signal, sys, threading, time
    from pathlib import Path
    trigger, marker, rank = sys.argv[1], Path(sys.argv[2]), os.environ["RANK"]
    if trigger != "-" and rank == "1" and not marker.exists():
        from hardenctl.evaluation.resume import batch_numbers

        def kill_when_due():
            while not eval(trigger):
                time.sleep(0.01)
            marker.write_text(os.environ["TORCHELASTIC_RESTART_COUNT"])
            os.kill(os.getpid(), signal.SIGKILL)
        threading.Thread(target=kill_when_due, daemon=True).start()
    from hardenctl.cli import main
    sys.exit(main([a.replace("{rank}", rank) for a in sys.argv[3:]]))
""")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_nodes(
    tmp: Path, args: list[str], trigger: str = "-", timeout: float = 240
) -> list[subprocess.CompletedProcess]:
    """Two torchrun agents, the same command each (c10d picks the node ranks), one process per node; both must end."""
    worker = tmp / "worker.py"
    worker.write_text(WORKER)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes=2",
        "--nproc_per_node=1",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint=127.0.0.1:{free_port()}",
        f"--rdzv-id={uuid.uuid4().hex[:8]}",
        "--max-restarts=1",
        "--monitor-interval=0.1",
        str(worker),
        trigger,
        str(tmp / "killed"),
        *args,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    agents = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)
    ]
    runs = []
    for agent in agents:
        try:
            stdout, stderr = agent.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for other in agents:
                other.kill()
            raise
        runs.append(subprocess.CompletedProcess(command, agent.returncode, stdout, stderr))
    return runs


def assert_ok(runs: list[subprocess.CompletedProcess]) -> None:
    for run in runs:
        assert run.returncode == 0, run.stderr[-4000:]


# ---------------------------------------------------------------------------------------------
# eval
# ---------------------------------------------------------------------------------------------
def eval_command(model: Path, data: Path, out: Path) -> list[str]:
    return [
        "eval",
        str(model),
        "--data",
        str(data),
        *EVAL_ARGS,
        "--report",
        str(out / "report.json"),
        "--samples",
        str(out / "samples.jsonl"),
        "--resume-dir",
        str(out / "state"),
    ]


@pytest.fixture(scope="module")
def one_process_eval(tmp_path_factory, digits_model_path, digits_npz) -> Path:
    from hardenctl.cli import main

    out = tmp_path_factory.mktemp("eval_one")
    assert main(eval_command(digits_model_path, digits_npz, out)) == 0
    return out


def assert_same_eval(out: Path, reference: Path) -> None:
    assert timeless(json.loads((out / "report.json").read_text())) == timeless(
        json.loads((reference / "report.json").read_text())
    )
    assert read_samples(out / "samples.jsonl")[1].rows() == read_samples(reference / "samples.jsonl")[1].rows()


def test_eval_on_two_nodes_matches_one_process(one_process_eval, digits_model_path, digits_npz, tmp_path):
    assert_ok(two_nodes(tmp_path, eval_command(digits_model_path, digits_npz, tmp_path)))
    assert not (tmp_path / "killed").exists()
    assert json.loads((tmp_path / "report.json").read_text())["n"] == 24
    assert_same_eval(tmp_path, one_process_eval)


def test_eval_restarted_by_torchrun_after_a_kill_matches_one_process(
    one_process_eval, digits_model_path, digits_npz, tmp_path
):
    state = tmp_path / "state" / "state-rank1-of2.pt"
    trigger = (
        f"os.path.exists({str(state)!r}) and len(batch_numbers(Path({str(state)!r})).get({MAIN_STAGE!r}, [])) >= 1"
    )
    assert_ok(two_nodes(tmp_path, [*eval_command(digits_model_path, digits_npz, tmp_path), "--resume"], trigger))
    assert (tmp_path / "killed").read_text() == "0"  # killed in the first attempt; the second one finished
    assert_same_eval(tmp_path, one_process_eval)


# ---------------------------------------------------------------------------------------------
# harden: each node its own --out (no shared disk); only rank 0 writes
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gn_model(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    net = create_timm_model("test_efficientnet_gn", num_classes=10, in_chans=1)
    model = wrap_model(net, "test_efficientnet_gn", 10, DIGITS_MEAN, DIGITS_STD, in_chans=1, input_size=(8, 8))
    return save_model(model, tmp_path_factory.mktemp("gn") / "gn.safetensors")


@pytest.fixture(scope="module")
def two_node_harden(tmp_path_factory, gn_model) -> Path:
    out = tmp_path_factory.mktemp("harden_two")
    assert_ok(two_nodes(out, ["harden", str(gn_model), *HARDEN_ARGS, "--out", str(out / "out{rank}")]))
    assert not (out / "out1").exists() and (out / "out0" / "model.safetensors").exists()
    return out / "out0"


def history(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


def test_harden_on_two_nodes_matches_one_process(two_node_harden, gn_model, tmp_path):
    from hardenctl.cli import main

    assert main(["harden", str(gn_model), *HARDEN_ARGS, "--out", str(tmp_path)]) == 0
    got, want = history(two_node_harden), history(tmp_path)
    assert [h["epoch"] for h in got] == [1, 2]
    for g, w in zip(got, want):
        assert g["loss"] == pytest.approx(w["loss"], rel=1e-6)
    two, one = load_file(two_node_harden / "model.safetensors"), load_file(tmp_path / "model.safetensors")
    assert two.keys() == one.keys()
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-5, atol=1e-6)
    assert json.loads((two_node_harden / "report.json").read_text())["runtime"]["world_size"] == 2


def test_harden_restarted_by_torchrun_after_a_kill_ends_with_the_same_weights(two_node_harden, gn_model, tmp_path):
    """Rank 1 dies once rank 0 has written epoch 1's checkpoint; torchrun restarts both nodes, rank 0 resumes from its
    checkpoint and hands it to rank 1 (whose own --out is empty): bit for bit the uninterrupted two-node run."""
    trigger = f"os.path.exists({str(tmp_path / 'out0' / 'checkpoints' / 'epoch_0001.pt')!r})"
    runs = two_nodes(
        tmp_path, ["harden", str(gn_model), *HARDEN_ARGS, "--resume", "--out", str(tmp_path / "out{rank}")], trigger
    )
    assert_ok(runs)
    assert (tmp_path / "killed").read_text() == "0"
    out = tmp_path / "out0"
    # it resumed: epoch 1's checkpoint is the one written before the kill, not trained again
    assert (out / "checkpoints" / "epoch_0001.pt").stat().st_mtime_ns <= (tmp_path / "killed").stat().st_mtime_ns
    assert not (tmp_path / "out1").exists()
    for epoch in (1, 2):
        got = read_checkpoint_state(out / "checkpoints" / f"epoch_{epoch:04d}.pt")
        want = read_checkpoint_state(two_node_harden / "checkpoints" / f"epoch_{epoch:04d}.pt")
        for key in want["model"]:
            assert torch.equal(got["model"][key], want["model"][key]), (epoch, key)
    assert [h["loss"] for h in history(out)] == [h["loss"] for h in history(two_node_harden)]
    got, want = load_file(out / "model.safetensors"), load_file(two_node_harden / "model.safetensors")
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
