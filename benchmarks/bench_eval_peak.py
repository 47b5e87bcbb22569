"""Peak RSS of an in-process evaluation, batch by batch: is it flat in n, and if not, what grows?

For each n (a fresh process each) it runs ``evaluate(model, folder, EvalConfig(attacks=["fgsm"], batch_size, n))`` on
imagewoof photos (class-folder symlinks, repeated under new names above the 1500 photos, as bench_data.py builds them;
the first n in class-interleaved order, so every n is class-balanced) with a random-init resnet10t, and prints after
every batch:

* RSS after the batch, and the batch's own peak (VmHWM, reset through /proc/self/clear_refs after every reading, so a
  growing transient is told apart from memory that stays);
* glibc's main heap (mallinfo2): its size, the bytes in use and the bytes free in it (free but still mapped: resident
  unless given back), and the blocks mapped outside it;
* with --workers > 0, the largest loader worker's RSS in the batch (sampled every 2 ms).

The peak of the whole run is the largest batch peak; the summary prints it per n and the ratio of the largest n to
the smallest. --mode data streams the batches only (no model); --mode fixed attacks one batch again and again
(nothing decoded, nothing kept). --no-release turns off the per-batch ``malloc_trim`` (hardenctl/heap.py);
--mallopt BYTES fixes glibc's mmap threshold first. glibc's own knobs (MALLOC_ARENA_MAX, MALLOC_MMAP_THRESHOLD_, ...)
pass through the environment.

    OMP_NUM_THREADS=1 python benchmarks/bench_eval_peak.py --n 256,2560 [--size 160] [--batch 128] [--workers 0]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


class MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def status(pid: str = "self") -> dict[str, float]:
    values = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(("VmRSS", "VmHWM")):
                key, value = line.split(":")
                values[key] = int(value.split()[0]) / 1024
    return values


class WorkerWatch:
    """The largest RSS of this process's children (loader workers) since the last reading, sampled every 2 ms."""

    def __init__(self):
        self.peak = 0.0
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            children = []
            try:
                for task in os.listdir("/proc/self/task"):
                    with open(f"/proc/self/task/{task}/children") as fh:
                        children += fh.read().split()
            except OSError:
                pass
            for pid in children:
                try:
                    self.peak = max(self.peak, status(pid).get("VmRSS", 0.0))
                except OSError:
                    pass
            time.sleep(0.002)

    def take(self) -> float:
        peak, self.peak = self.peak, 0.0
        return peak


def child(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = MallInfo2
    if args.mallopt:
        M_MMAP_THRESHOLD = -3
        libc.mallopt(M_MMAP_THRESHOLD, args.mallopt)
    from hardenctl import api, heap
    from hardenctl.evaluation import suite
    from hardenctl.evaluation.config import EvalConfig

    if args.no_release:  # release_free_memory (SuiteRun's default) then finds no malloc_trim: it does nothing
        heap._malloc_trim = lambda: None
    model = api.load_model(str(args.model))
    data = api.load_data(str(args.tree), model, n=args.n, workers=args.workers)
    workers = WorkerWatch() if args.workers else None
    peaks: list[float] = []
    started = time.perf_counter()

    def note(label: str) -> None:
        now = status()
        malloc = libc.mallinfo2()
        peaks.append(now["VmHWM"])
        line = (
            f"  {label:>22}: RSS {now['VmRSS']:5.0f}  batch peak {now['VmHWM']:5.0f}  "
            f"heap {malloc.arena / 2**20:4.0f} (in use {malloc.uordblks / 2**20:4.0f}, "
            f"free {malloc.fordblks / 2**20:4.0f})  mapped {malloc.hblkhd / 2**20:4.0f} MB"
        )
        if workers is not None:
            line += f"  worker {workers.take():4.0f} MB"
        if args.per_batch:
            print(line + f"  {time.perf_counter() - started:5.1f} s", flush=True)
        with open("/proc/self/clear_refs", "w") as fh:  # the next reading's VmHWM is that batch's own peak
            fh.write("5")

    note("set up")
    progress = lambda stage, done, total, metrics=None: note(f"{stage} {done}/{total}")  # noqa: E731
    if args.mode == "evaluate":
        from hardenctl.evaluation.engine import evaluate

        evaluate(model, data, EvalConfig(attacks=["fgsm"], batch_size=args.batch, n=args.n), progress)
        note("report")
    elif args.mode == "data":
        for start, x, y in data.batches(args.batch):
            progress("data", start + len(y), len(data))
    else:  # fixed: one batch attacked again and again, nothing decoded or kept
        attacks = EvalConfig(attacks=["fgsm"]).build_attacks(8 / 255, 1)
        for attack in attacks:
            attack.fast = True
        run = suite.SuiteRun(attacks, eps=8 / 255, norm="linf", batch_size=args.batch)
        x, y = data.pixels(0, args.batch), data.y[: args.batch]
        for b in range(-(-args.n // args.batch)):
            suite._run_batch(model.eval(), run, b, x, y, None)
            heap.release_free_memory()  # as run_suite does after every batch (a no-op with --no-release)
            progress("fixed", (b + 1) * args.batch, args.n)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(
        "END "
        + json.dumps(
            {
                "n": args.n,
                "peak_mb": max(peaks),
                "batch_peaks_mb": peaks,
                "user_s": usage.ru_utime,
                "sys_s": usage.ru_stime,
                "minor_faults": usage.ru_minflt,
                "seconds": time.perf_counter() - started,
            }
        ),
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", default="256,2560", help="comma-separated n values, a fresh process each")
    parser.add_argument("--size", type=int, default=160, help="model input size (square), declared in the checkpoint")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--workers", type=int, default=0, help="loader workers (0: decode in the evaluating process)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--mode", choices=("evaluate", "data", "fixed"), default="evaluate")
    parser.add_argument("--no-release", action="store_true", help="no malloc_trim around batches (hardenctl/heap.py)")
    parser.add_argument("--mallopt", type=int, default=0, help="fix glibc's mmap threshold at this many bytes first")
    parser.add_argument("--per-batch", action="store_true", help="print every batch's line")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_eval_peak"), help="photo trees and model (kept)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--tree", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        args.n = args.child
        child(args)
        return

    sys.path.insert(0, str(HERE))
    from bench_data import build_trees, make_model
    from common import IMAGEWOOF

    values = [int(v) for v in args.n.split(",")]
    tree = args.work / f"trees{max(values)}" / "all"
    if not tree.exists():
        build_trees(IMAGEWOOF, tree.parent, [], max(values))
    model = args.work / f"resnet10t-{args.size}.safetensors"
    if not model.exists():
        make_model(model, "resnet10t", args.size)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    knobs = " ".join(f"{k}={v}" for k, v in os.environ.items() if k.startswith(("MALLOC_", "GLIBC_")))
    print(
        f"resnet10t at {args.size} px, batch {args.batch}, workers {args.workers}, {args.threads} thread(s), "
        f"mode {args.mode}"
        f"{', no release' if args.no_release else ''}{f', mallopt {args.mallopt}' if args.mallopt else ''}"
        f"{', ' + knobs if knobs else ''}; load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    results = {}
    for n in values:
        cmd = (
            [
                sys.executable,
                __file__,
                "--child",
                str(n),
                "--model",
                str(model),
                "--tree",
                str(tree),
                "--size",
                str(args.size),
                "--batch",
                str(args.batch),
                "--workers",
                str(args.workers),
                "--threads",
                str(args.threads),
                "--mode",
                args.mode,
                "--mallopt",
                str(args.mallopt),
            ]
            + ["--no-release"] * args.no_release
            + ["--per-batch"] * args.per_batch
        )
        done = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        lines = done.stdout.splitlines()
        print("\n".join(line for line in lines if not line.startswith("END ")), flush=True)
        end = [line for line in lines if line.startswith("END ")]
        if done.returncode or not end:
            raise SystemExit(f"n={n} failed (exit {done.returncode})")
        results[n] = json.loads(end[0][4:])
        r = results[n]
        print(
            f"n = {n:5d}: peak RSS {r['peak_mb']:6.0f} MB (first batch {r['batch_peaks_mb'][1]:.0f}), CPU "
            f"{r['user_s']:.1f} s user + {r['sys_s']:.1f} s sys, {r['minor_faults']} minor faults, "
            f"{r['seconds']:.0f} s",
            flush=True,
        )
    low, high = min(results), max(results)
    print(f"ratio n={high} / n={low}: {results[high]['peak_mb'] / results[low]['peak_mb']:.3f}")


if __name__ == "__main__":
    main()
