"""``torchrun -m hardenctl eval ... --n 96`` failed in torchrun's own parser (``--n`` abbreviates ``--nnodes``, ...).

``-n`` and ``--num-samples`` are spellings torchrun cannot mistake (``--n`` is kept for plain runs); no other option of
ours may be a prefix of one of torchrun's, or torchrun would take it (ambiguous: an error; unique: silently its own).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import typer
from testing_helpers import torchrun
from torch.distributed.run import get_args_parser

from hardenctl.cli import app

KEPT_FOR_PLAIN_RUNS = {"--n"}  # the old spelling: fine without torchrun, documented as -n/--num-samples under it


def torchrun_reads(args: list[str]) -> list[str]:
    """What torchrun's parser hands to ``-m hardenctl`` (argparse exits 2 on an option it finds ambiguous)."""
    parsed = get_args_parser().parse_args(["--nproc_per_node=1", "-m", "hardenctl", *args])
    return [parsed.training_script, *parsed.training_script_args]


def option_strings(command: str) -> set[str]:
    click_command = typer.main.get_command(app).commands[command]
    return {s for p in click_command.params for s in (*p.opts, *p.secondary_opts) if s.startswith("-")}


@pytest.mark.parametrize("command", ["eval", "harden", "demo"])
def test_every_option_reaches_hardenctl_through_torchrun(command):
    options = option_strings(command) | {"--debug"}
    assert {"-n", "--num-samples"} <= options or command == "harden"
    for option in sorted(options - KEPT_FOR_PLAIN_RUNS):
        args = [command, "model.safetensors", option, "1"]
        assert torchrun_reads(args) == ["hardenctl", *args], option


def test_the_old_spelling_is_what_torchrun_refuses(capsys):
    with pytest.raises(SystemExit):
        torchrun_reads(["eval", "model.safetensors", "--n", "96"])
    assert "ambiguous option: --n" in capsys.readouterr().err


@pytest.mark.slow
def test_torchrun_eval_with_num_samples(digits_model_path, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=1",
        "-m",
        "hardenctl",
        "eval",
        str(digits_model_path),
        "--data",
        "digits-test",
        "--num-samples",
        "8",
        "--attacks",
        "fgsm",
        "--eps",
        "0.1",
        "--device",
        "cpu",
        "--quiet",
        "--no-strict",
        "--report",
        str(tmp_path / "report.json"),
    ]
    run = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["n"] == report["counts"]["n"] == 8
    short = subprocess.run(
        [
            sys.executable,
            "-m",
            "hardenctl",
            "eval",
            str(digits_model_path),
            "--data",
            "digits-test",
            "-n",
            "5",
            "--attacks",
            "fgsm",
            "--eps",
            "0.1",
            "--quiet",
            "--no-strict",
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert short.returncode == 0, short.stderr[-3000:]
    assert json.loads(short.stdout)["n"] == 5


@pytest.mark.slow
def test_a_crash_under_torchrun_exits_3_on_every_rank_and_rank_0_still_writes_the_report(digits_model_path, tmp_path):
    """2 gloo processes evaluate, then gating breaks on both: each rank prints its own line naming its own log."""
    run = torchrun(
        f"""
        import sys
        import hardenctl.api.eval_request
        from hardenctl.cli import main

        def broken(*args, **kwargs):
            raise RuntimeError("gating broke")

        hardenctl.api.eval_request.gate = broken
        sys.exit(main(["eval", {str(digits_model_path)!r}, "--data", "digits-test", "--num-samples", "8",
                       "--batch-size", "4", "--attacks", "fgsm", "--eps", "0.1", "--device", "cpu", "--quiet",
                       "--report", {str(tmp_path / "report.json")!r}]))
    """,
        tmp_path,
        env={"HARDENCTL_LOG_DIR": str(tmp_path / "logs")},
    )
    assert run.returncode != 0
    lines = [line for line in run.stderr.splitlines() if "internal error" in line]
    assert len(lines) == 2 and all("RuntimeError: gating broke" in line and "exitcode" not in line for line in lines), (
        run.stderr[-3000:]
    )
    assert "exitcode: 3" in run.stderr  # what torchrun reports for the ranks
    logs = sorted(p.name for p in (tmp_path / "logs").iterdir())
    assert [name.rsplit("-", 1)[1] for name in logs] == ["rank0.log", "rank1.log"]
    for rank, name in enumerate(logs):
        assert f"(rank {rank} of 2)" in next(line for line in lines if name in line)
    assert json.loads((tmp_path / "report.json").read_text())["n"] == 8  # computed before the crash, so written


@pytest.mark.slow
def test_batch_size_auto_under_torchrun_cuts_the_same_batches_on_every_rank(digits_model_path, tmp_path):
    """Each rank measures its own free memory; rank 1 here finds room for 2 images, rank 0 for 4. Both must attack in
    batches of 2 (the smallest), and the report is then one process's with --batch-size 2."""
    run = torchrun(
        f"""
        import importlib, os, sys
        from hardenctl.cli import main

        engine = importlib.import_module("hardenctl.evaluation.engine")

        def measured(model, probe, n, device, world_size=1):
            size = 4 if os.environ["RANK"] == "0" else 2
            return size, {{"bytes_per_image": 1, "free_bytes": size, "fits": size, "chosen": size}}

        engine.auto_batch_size = measured
        sys.exit(main(["eval", {str(digits_model_path)!r}, "--data", "digits-test", "--num-samples", "8",
                       "--batch-size", "auto", "--attacks", "pgd", "--eps", "0.1", "--device", "cpu", "--quiet",
                       "--no-strict",
                       "--report", {str(tmp_path / "auto.json")!r}]))
    """,
        tmp_path,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    plain = subprocess.run(
        [
            sys.executable,
            "-m",
            "hardenctl",
            "eval",
            str(digits_model_path),
            "--data",
            "digits-test",
            "-n",
            "8",
            "--batch-size",
            "2",
            "--attacks",
            "pgd",
            "--eps",
            "0.1",
            "--quiet",
            "--no-strict",
            "--report",
            str(tmp_path / "plain.json"),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert plain.returncode == 0, plain.stderr[-3000:]
    auto, fixed = (json.loads((tmp_path / name).read_text()) for name in ("auto.json", "plain.json"))
    assert auto["execution"]["batch_size"] == 2 and auto["execution"]["batch_size_auto"]["chosen"] == 2
    assert (auto["counts"], auto["attacks"], auto["per_class"]) == (
        fixed["counts"],
        fixed["attacks"],
        fixed["per_class"],
    )
