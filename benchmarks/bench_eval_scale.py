"""Evaluation at scale on a small CPU box: sharding speed-up, resume overhead, memory vs n.

Prints, measured in one run:
  * 2 gloo processes of 1 thread each (torchrun) vs 1 process of 1 thread, same points, seed and batch size:
    evaluation throughput (images/s, from the report's ``seconds``) and their ratio (target >= 1.8x), and that the
    two reports are identical apart from wall times (``seconds``, overall and per attack)
  * the box's own parallel capacity, as a control: two independent 1-process evaluations run at the same time
    (2.0x on two idle cores; less when other work shares them), and the sharding efficiency against it
  * the speed-up two idle cores would give, from CPU time (which other work on the box does not inflate): the
    single process's evaluation CPU seconds over the busier rank's
  * resume overhead: the same single-process evaluation with ``--resume-dir`` (state saved after every batch), and
    the time of one state save (torch.save + fsync + rename) measured on its own
  * peak resident memory of a fresh process evaluating n images, for growing n, with and without ``--resume-dir``
    (should stay flat: only per-sample results grow with n)

The model is timm's ``test_resnet`` (untrained, 32x32) on CIFAR-10 test images (``../shared/data/cifar10/test.npz``;
digits when absent), with the labels replaced by the model's own clean predictions so that every point is attacked:
the work per image is the worst case of a well-trained model. Standard suite with cut budgets.

    python benchmarks/bench_eval_scale.py [--n 96] [--batch 16] [--apgd-steps 10] [--square-queries 100] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import CIFAR, run_times

CIFAR_TEST = CIFAR / "test.npz"


def prepare(out: Path, arch: str, size: int) -> tuple[Path, Path, str]:
    """(checkpoint, data .npz relabelled with the model's clean predictions, source name)."""
    from hardenctl.data import load_dataset
    from hardenctl.models import create_timm_model, save_model, wrap_model

    torch.manual_seed(0)
    if CIFAR_TEST.exists():
        with np.load(CIFAR_TEST) as data:
            x, source = data["x"][:4096], "cifar10 test"
    else:
        digits = load_dataset("digits")
        x, source = digits.x.repeat(1, 3, 1, 1).permute(0, 2, 3, 1).numpy(), "digits (CIFAR-10 absent)"
        size = 8
    net = create_timm_model(arch, num_classes=10, in_chans=3)
    model = wrap_model(net, arch, 10, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), in_chans=3, input_size=(size, size)).eval()
    with torch.no_grad():
        pixels = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255
        labels = torch.cat([model(pixels[i : i + 256]).argmax(1) for i in range(0, len(pixels), 256)])
    np.savez(out / "data.npz", x=x, y=labels.numpy())
    return save_model(model, out / "model.safetensors"), out / "data.npz", source


WORKER = """
import importlib, json, os, sys, time
import torch
torch.set_num_threads(1)
from hardenctl.cli import main

api = importlib.import_module("hardenctl.api.evaluation")  # the API calls the engine by this module's evaluate_model
evaluate = api.evaluate_model

def timed(*args, **kwargs):  # looked up when the CLI runs: record this process's CPU and wall time of the engine
    cpu, wall = time.process_time(), time.perf_counter()
    try:
        return evaluate(*args, **kwargs)
    finally:
        with open(os.path.join(argv[0], "rank" + os.environ.get("RANK", "0") + ".json"), "w") as fh:
            json.dump({"cpu": time.process_time() - cpu, "wall": time.perf_counter() - wall}, fh)

argv = sys.argv[1:]
argv = argv[1:] if argv[:1] == ["--"] else argv  # torchrun ... worker.py -- DIR eval ... (see below)
api.evaluate_model = timed
sys.exit(main(argv[1:]))
"""


def untimed(report: dict) -> dict:
    """The report without its wall times (the whole run's and each attack's), which differ from run to run."""
    work = {name: {k: v for k, v in entry.items() if k != "seconds"} for name, entry in report.get("work", {}).items()}
    return {**{k: v for k, v in report.items() if k != "seconds"}, "work": work}


def cpu_seconds(directory: Path) -> list[float]:
    return [json.loads(p.read_text())["cpu"] for p in sorted(directory.glob("rank*.json"))]


def run(command: list[str], env: dict) -> tuple[dict, float]:
    """(the JSON report rank 0 printed, wall seconds of the whole command)."""
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if done.returncode not in (0, 1):
        sys.exit(f"failed ({done.returncode}): {' '.join(command)}\n{done.stderr[-3000:]}")
    return json.loads(done.stdout), wall


def run_two_at_once(command: list[str], env: dict) -> list[float]:
    """The eval seconds of two copies of ``command`` started together."""
    processes = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)
    ]
    seconds = []
    for process in processes:
        stdout, stderr = process.communicate()
        if process.returncode not in (0, 1):
            sys.exit(stderr[-3000:])
        seconds.append(json.loads(stdout)["seconds"])
    return seconds


def save_ms(state_file: Path) -> float:
    """Median time (ms) to save ``state_file``'s state again through EvalState.save (torch.save, fsync, rename)."""
    from hardenctl.evaluation.resume import EvalState, read_state

    saved = read_state(state_file)
    loaded = EvalState.open(state_file.parent, saved["key"], resume=True)
    state = EvalState(state_file.parent.parent / "saved-again", saved["key"])
    state.loaded = loaded.loaded
    for stage, batches in loaded.loaded.items():
        state.carried(stage, sorted(batches))
    return 1000 * statistics.median(run_times(lambda: state.save(saved["extra"]), 15))


def peak_rss_mb(model: Path, data: Path, n: int, state: Path | None, env: dict) -> float:
    """Peak RSS (MB) of a fresh process evaluating n images (FGSM, batches of 64; with a state kept when given)."""
    code = f"""
import resource, sys, torch
torch.set_num_threads(1)
from hardenctl.cli import main
args = ["eval", {str(model)!r}, "--data", {str(data)!r}, "--n", "{n}", "--batch-size", "64", "--attacks", "fgsm",
        "--eps", "8/255", "--device", "cpu", "--quiet", "--no-strict"]
{"args += ['--resume-dir', " + repr(str(state)) + "]" if state else ""}
code = main(args)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if done.returncode not in (0, 1):
        sys.exit(done.stderr[-3000:])
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="test_resnet")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--n", type=int, default=192)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--apgd-steps", type=int, default=10)
    parser.add_argument("--square-queries", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--memory-n", default="256,1024,4096")
    args = parser.parse_args()

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        model, data, source = prepare(out, args.arch, args.size)
        eval_args = [
            "eval",
            str(model),
            "--data",
            str(data),
            "--n",
            str(args.n),
            "--batch-size",
            str(args.batch),
            "--eps",
            "8/255",
            "--suite",
            "standard",
            "--apgd-steps",
            str(args.apgd_steps),
            "--square-queries",
            str(args.square_queries),
            "--device",
            "cpu",
            "--no-strict",
            "--json",
            "--quiet",
            "--pictures",
            "0",
        ]
        worker = out / "worker.py"
        worker.write_text(WORKER)
        (out / "cpu1").mkdir()
        (out / "cpu2").mkdir()
        single = [sys.executable, str(worker), str(out / "cpu1"), *eval_args]
        # "--": without it torchrun's parser takes --n for an abbreviation of its own options
        sharded = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(worker),
            "--",
            str(out / "cpu2"),
            *eval_args,
        ]
        cpu: dict[str, list[list[float]]] = {"1 process": [], "2 processes": []}  # per run: each rank's CPU seconds
        print(
            f"{args.arch} {args.size}x{args.size} on {source}; n = {args.n}, batches of {args.batch} "
            f"({-(-args.n // args.batch)} batches), standard suite (APGD {args.apgd_steps} steps, Square "
            f"{args.square_queries} queries), every point attacked; ε = 0.5 check on the first 100; "
            f"{len(os.sched_getaffinity(0))} cores available, load average {os.getloadavg()[0]:.1f} at the start; "
            "1 thread per process",
            flush=True,
        )

        times: dict[str, list[float]] = {"1 process": [], "2 processes": [], "1 process + state": []}
        walls: dict[str, list[float]] = {k: [] for k in times}
        reports: dict[str, dict] = {}
        capacity: list[float] = []  # 2 x (one run alone) / (each of two runs at once): 2.0 on two idle cores
        for repeat in range(args.repeats):  # interleaved, so a noisy neighbour hurts each configuration alike
            for name, command in (
                ("1 process", single),
                ("2 processes", sharded),
                ("1 process + state", single + ["--resume-dir", str(out / f"state{repeat}")]),
            ):
                report, wall = run(command, env)
                if name in cpu:
                    cpu[name].append(cpu_seconds(out / ("cpu1" if name == "1 process" else "cpu2")))
                times[name].append(report["seconds"])
                walls[name].append(wall)
                reports[name] = report
                print(f"  {name:<18} eval {report['seconds']:7.2f} s   whole command {wall:6.2f} s", flush=True)
            both = run_two_at_once(single, env)
            capacity.append(2 * times["1 process"][-1] / statistics.mean(both))
            print(f"  {'2 x 1 process at once':<18} eval {both[0]:7.2f} s and {both[1]:.2f} s (control)", flush=True)
        same = all(untimed(reports[name]) == untimed(reports["1 process"]) for name in reports)
        one, two, state = (statistics.median(times[k]) for k in ("1 process", "2 processes", "1 process + state"))
        print(f"\nthroughput, 1 process  : {args.n / one:6.2f} images/s (eval {one:.2f} s, median of {args.repeats})")
        print(f"throughput, 2 processes: {args.n / two:6.2f} images/s (eval {two:.2f} s)")
        print(
            f"speed-up 2 vs 1        : {one / two:.2f}x  (target >= 1.8x; whole commands incl. start-up: "
            f"{statistics.median(walls['1 process']) / statistics.median(walls['2 processes']):.2f}x)"
        )
        box = statistics.median(capacity)
        print(
            f"box capacity (control) : {box:.2f}x  (two independent 1-process runs at once vs one alone; "
            f"sharding efficiency against it {one / two / box:.0%})"
        )
        alone = statistics.median(c[0] for c in cpu["1 process"])
        busier = statistics.median(max(c) for c in cpu["2 processes"])
        total = statistics.median(sum(c) for c in cpu["2 processes"])
        print(
            f"on two idle cores      : {alone / busier:.2f}x  (evaluation CPU seconds, medians: 1 process {alone:.2f}; "
            f"2 ranks {total:.2f} together ({100 * (total / alone - 1):+.0f}%), the busier {busier:.2f}: its share "
            f"{busier / total:.0%} is the imbalance of whole batches)"
        )
        print(f"reports identical apart from wall times (1, 2 processes, with state): {same}")
        state_file = max((out / f"state{args.repeats - 1}").glob("state-*.pt"), key=lambda p: p.stat().st_size)
        saves = -(-args.n // args.batch) + -(-min(args.n, 100) // args.batch)
        per_save = save_ms(state_file)
        print(
            f"resume overhead        : {100 * (state / one - 1):+.1f}% (eval {state:.2f} s vs {one:.2f} s; state file "
            f"{state_file.stat().st_size / 1024:.0f} KiB at the end, saved after each of {saves} batches; one save "
            f"{per_save:.1f} ms, i.e. {100 * saves * per_save / 1000 / one:.1f}% of the evaluation)"
        )

        print("\npeak RSS of a fresh process (FGSM, batches of 64; the data set itself is loaded whole):")
        for n in [int(v) for v in args.memory_n.split(",")]:
            plain = peak_rss_mb(model, data, n, None, env)
            kept = peak_rss_mb(model, data, n, out / f"memory-state-{n}", env)
            print(f"  n = {n:5d}: {plain:7.1f} MB   with --resume-dir {kept:7.1f} MB", flush=True)


if __name__ == "__main__":
    main()
