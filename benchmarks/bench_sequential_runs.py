"""``hardenctl eval --sequential`` on real CIFAR-10 models: images and seconds to a decision against the full run.

bench_sequential.py simulates the confidence sequences on invented populations; this script runs the CLI the way a
CI job does (``python -m hardenctl eval ...`` in a subprocess, ``--report``) on a clean-trained timm resnet10t, at
radii chosen so the full run's robust accuracy lies near each ``--targets`` value (ε 0 gives the clean accuracy).
For every setting it runs the same command with and without ``--sequential``, back to back in this script run, and
records the full run's robust accuracy and verdict, the images the sequential run evaluated before it stopped, both
runs' wall seconds (process start included, as CI pays it) and whether the early verdict is the full run's. Both runs
also write ``--samples``, and the images the sequential run evaluated are compared with the full run's results for
them: with ``--sequential`` an image's random starts come from its own stream (seed, index), without it from its
batch's, so a few borderline images may differ (the usual run-to-run noise of random starts; within ``--sequential``
an image's outcome does not depend on its batch or round, which tests/attacks/test_streams.py checks exactly).

How ε is chosen (cheap, cached): the CLI runs the same suite on the first ``--calibration-n`` test images at each
``--eps-grid`` radius; robust accuracy falls with ε, so each target's ε is interpolated linearly between the two
grid radii that bracket it, rounded to 0.01/255. A target above the clean accuracy cannot be reached with this model
and is run at ε 0 (said in the output). The model (``--model``, or trained once by study_setup.prepare into
``--model-dir`` and reused) and the calibration (``--out``/calibration.json) are kept, so a rerun only repeats the
timed runs. Pass ``--model-dir benchmarks/out/recipes --train-n 10000 --pretrain-epochs 10`` to use the studies'
clean model instead (63% clean: no 0.70 setting).

    OMP_NUM_THREADS=2 python benchmarks/bench_sequential_runs.py [--threads 2] [--n 1000] [--suite quick]
        [--batch-size 100] [--targets 0.10,0.20,0.35,0.45,0.55,0.70] [--lower-targets 0.35,0.70]
        [--out benchmarks/out/sequential-runs] [--reuse] [--results-md]

Writes ``--out``/results.json and prints a Markdown section ("## Sequential gates on CIFAR-10 models"); with
``--results-md`` it also replaces that section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import CIFAR, ROOT, minutes_log, update_section

from hardenctl.files import atomic_write

HEADING = "## Sequential gates on CIFAR-10 models"
TEST_DATA = CIFAR / "test.npz"
OUT = ROOT / "benchmarks" / "out" / "sequential-runs"
GRID = "0,0.25,0.5,0.75,1,1.5,2,3,4"  # in 1/255: a clean resnet10t's quick-suite robust accuracy is ~0.1 by 3/255


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="OMP/MKL threads of every CLI run and of the training")
    parser.add_argument("--n", type=int, default=1000, help="--n of every timed run (the first n test images)")
    parser.add_argument("--suite", default="quick")
    parser.add_argument("--batch-size", type=int, default=100, help="--batch-size: one round of --sequential")
    parser.add_argument("--threshold", type=float, default=0.45, help="--min-robust-acc of every run")
    parser.add_argument("--alpha", type=float, default=None, help="--alpha (default: the CLI's, 0.05)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the model's training and of the calibration")
    parser.add_argument(
        "--seeds", default="0", help="--seed of the timed pairs, one pair each (it sets --sequential's order too)"
    )
    parser.add_argument("--targets", default="0.10,0.20,0.35,0.45,0.55,0.70", help="robust accuracies to aim at")
    parser.add_argument("--lower-targets", default="0.35,0.70", help="targets also run with --gate-on lower")
    parser.add_argument("--calibration-n", type=int, default=200, help="images of the cheap pass that picks each ε")
    parser.add_argument("--eps-grid", default=GRID, help="radii of the calibration pass, in 1/255")
    parser.add_argument("--model", type=Path, default=None, help="a checkpoint to use instead of the trained one")
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=None,
        help="where the clean model is trained and kept (default: --out/model-ARCH-nTRAIN_N-eEPOCHS)",
    )
    parser.add_argument("--arch", default="resnet10t")
    parser.add_argument("--train-n", type=int, default=10000, help="training images of the clean model (all there are)")
    parser.add_argument("--pretrain-epochs", type=int, default=20, help="clean epochs of the model (10: ~61%% clean)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument(
        "--lower-full", action="store_true", help="run --gate-on lower's own full run (default: the point one's)"
    )
    parser.add_argument("--reuse", action="store_true", help="keep timed runs whose report is already in --out/runs")
    parser.add_argument("--results-md", action="store_true", help="also write the section into benchmarks/RESULTS.md")
    return parser.parse_args(argv)


def clean_model(args: argparse.Namespace, log) -> Path:
    """The checkpoint every setting evaluates: ``--model``, or a clean resnet10t trained once (study_setup.prepare)."""
    if args.model is not None:
        return args.model
    from study_setup import prepare  # imports torch: only when a model must be found or trained

    model_dir = args.model_dir or args.out / f"model-{args.arch}-n{args.train_n}-e{args.pretrain_epochs}"
    setup_args = argparse.Namespace(
        arch=args.arch,
        train_n=args.train_n,
        eval_n=100,
        pretrain_epochs=args.pretrain_epochs,
        lr=0.05,
        seed=args.seed,
        threads=args.threads,
        channels_last=True,
        out=model_dir,
    )
    return prepare(setup_args).input_path


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def child_env(threads: int) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}


def run_eval(
    model: Path, args: argparse.Namespace, eps255: float, n: int, report: Path, extra: list[str], seed: int
) -> dict[str, Any]:
    """One ``python -m hardenctl eval`` run, timed from process start to exit; its report and exit code."""
    command = [
        sys.executable,
        "-m",
        "hardenctl",
        "eval",
        str(model),
        "--data",
        str(TEST_DATA),
        "--n",
        str(n),
        "--suite",
        args.suite,
        "--batch-size",
        str(args.batch_size),
        "--eps",
        f"{eps255:g}/255",
        "--seed",
        str(seed),
        "--device",
        "cpu",
        "--report",
        str(report),
        "--quiet",
        *extra,
    ]
    report.unlink(missing_ok=True)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    done = subprocess.run(command, env=child_env(args.threads), capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode not in (0, 1) or not report.is_file():
        raise SystemExit(f"hardenctl eval failed (exit {done.returncode}): {' '.join(command)}\n{done.stderr[-2000:]}")
    return {
        "command": ["python", "-m", "hardenctl", *command[3:]],
        "exit_code": done.returncode,
        "wall_seconds": seconds,
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "report": json.loads(report.read_text()),
    }


def calibrate(model: Path, args: argparse.Namespace, log) -> dict[str, float]:
    """Robust accuracy on the first --calibration-n images at each grid radius (cached by model, suite and n)."""
    cache = args.out / "calibration.json"
    key = {
        "model_sha256": file_sha256(model),
        "suite": args.suite,
        "n": args.calibration_n,
        "batch_size": args.batch_size,
        "seed": args.seed,
    }
    stored = json.loads(cache.read_text()) if cache.is_file() else {}
    points = stored.get("points", {}) if stored.get("key") == key else {}
    for eps255 in [float(v) for v in args.eps_grid.split(",")]:
        name = f"{eps255:g}"
        if name not in points:
            report = args.out / "calibration" / f"eps-{name}.json"
            run = run_eval(model, args, eps255, args.calibration_n, report, [], args.seed)
            points[name] = run["report"]["robust_accuracy"]
            log(
                f"calibration: eps {name}/255 on {args.calibration_n} images: robust {points[name]:.3f} "
                f"({run['wall_seconds']:.0f} s)"
            )
            atomic_write(cache, json.dumps({"key": key, "points": points}, indent=1))
    return points


def eps_for(target: float, points: dict[str, float]) -> tuple[float, str]:
    """The radius (1/255) whose calibrated robust accuracy is ``target`` (linear interpolation), and how it was got."""
    grid = sorted((float(k), v) for k, v in points.items())
    if target >= grid[0][1]:
        return grid[0][0], f"unreachable: {grid[0][1]:.3f} at {grid[0][0]:g}/255 is the most this model gets"
    for (e0, a0), (e1, a1) in zip(grid, grid[1:]):
        if a1 <= target <= a0:
            eps = e0 if a0 == a1 else e0 + (a0 - target) * (e1 - e0) / (a0 - a1)
            return round(eps, 2), f"interpolated between {e0:g}/255 ({a0:.3f}) and {e1:g}/255 ({a1:.3f})"
    return grid[-1][0], f"below the grid: {grid[-1][1]:.3f} at {grid[-1][0]:g}/255"


def samples_disagree(sequential: Path, full: Path) -> int:
    """Images the sequential run evaluated whose per-image result differs from the full run's."""

    def rows(path: Path) -> dict[int, tuple]:
        lines = path.read_text().splitlines()[1:]  # line 1: the header
        return {(r := json.loads(line))["index"]: (r["clean_correct"], r["robust"]) for line in lines}

    full_rows = rows(full)
    return sum(full_rows.get(index) != result for index, result in rows(sequential).items())


def run_setting(
    model: Path, args: argparse.Namespace, target: float, eps255: float, gate_on: str, seed: int, index: int
) -> dict[str, Any]:
    """The sequential and the full run of one setting and seed, back to back; what the table needs. The pairs
    alternate which runs first, so a drift in the machine's load does not always favour the same one. A
    ``--gate-on lower`` setting shares its full run with the point setting of the same ε and seed (unless
    ``--lower-full``): ``--gate-on`` changes no attack, only the rule its verdict applies to the same count."""
    name = f"t{target:.2f}-{gate_on}-s{seed}"
    runs = args.out / "runs"
    gate = ["--min-robust-acc", f"{args.threshold:g}", "--gate-on", gate_on]
    alpha = [] if args.alpha is None else ["--alpha", f"{args.alpha:g}"]
    pair = [("sequential", ["--sequential", *alpha]), ("full", [])]
    if gate_on == "lower" and not args.lower_full:
        pair = pair[:1]
    results = {}
    for kind, extra in pair if index % 2 == 0 else pair[::-1]:
        stored = runs / f"{name}-{kind}.run.json"
        samples = runs / f"{name}-{kind}.samples.jsonl"
        if args.reuse and stored.is_file():
            results[kind] = json.loads(stored.read_text())
            continue
        report = runs / f"{name}-{kind}.json"
        results[kind] = run_eval(model, args, eps255, args.n, report, [*gate, *extra, "--samples", str(samples)], seed)
        atomic_write(stored, json.dumps(results[kind], indent=1))
    full_name = name if "full" in results else f"t{target:.2f}-point-s{seed}"
    if "full" not in results:
        results["full"] = json.loads((runs / f"{full_name}-full.run.json").read_text())
    disagree = samples_disagree(runs / f"{name}-sequential.samples.jsonl", runs / f"{full_name}-full.samples.jsonl")
    return {**summarise(target, eps255, gate_on, seed, results, disagree, args), "full_run": full_name}


def verdict(report: dict[str, Any], gate_on: str, threshold: float) -> str:
    """The min_robust_acc gate's verdict in ``report``; for a report gated on the other basis, the CLI's rule
    (:func:`hardenctl.sequential.count_cut`, the fixed-n gate's own threshold on the count) on its count."""
    from hardenctl.sequential import count_cut

    gate = next(g for g in report["gates"] if g["name"] == "min_robust_acc")
    if report["gate_on"] == gate_on:
        return "pass" if gate["passed"] else "fail"
    count = round(report["robust_accuracy"] * report["n"])
    return "pass" if count >= count_cut(threshold, gate_on, report["n"]) else "fail"


def summarise(
    target: float,
    eps255: float,
    gate_on: str,
    seed: int,
    runs: dict[str, dict],
    disagree: int,
    args: argparse.Namespace,
) -> dict[str, Any]:
    from hardenctl.sequential import count_cut

    seq, full = runs["sequential"], runs["full"]
    section = seq["report"]["sequential"]
    n_full = full["report"]["n"]
    cut = count_cut(args.threshold, "lower" if gate_on == "lower" else "point", n_full) / n_full
    robust = full["report"]["robust_accuracy"]
    round_seconds = full["wall_seconds"] * args.batch_size / n_full
    return {
        "target": target,
        "eps_255": eps255,
        "gate_on": gate_on,
        "seed": seed,
        "first": next(iter(runs)),  # which of the pair ran first
        "full_robust_accuracy": robust,
        "full_clean_accuracy": full["report"]["clean_accuracy"],
        "cut_accuracy": cut,
        "distance": abs(robust - cut),
        "full_verdict": verdict(full["report"], gate_on, args.threshold),
        "sequential_verdict": verdict(seq["report"], gate_on, args.threshold),
        "same_verdict": verdict(full["report"], gate_on, args.threshold)
        == verdict(seq["report"], gate_on, args.threshold),
        "images": seq["report"]["n"],
        "max_n": n_full,
        "decided_at": section["decided_at"],
        "rounds": len(section["rounds"]),
        "sequential_seconds": seq["wall_seconds"],
        "full_seconds": full["wall_seconds"],
        "time_ratio": seq["wall_seconds"] / full["wall_seconds"],
        "sequential_eval_seconds": seq["report"]["seconds"],
        "full_eval_seconds": full["report"]["seconds"],
        "within_full_plus_one_round": seq["report"]["n"] <= n_full
        and seq["wall_seconds"] <= full["wall_seconds"] + round_seconds,
        "samples_disagree": disagree,
        "exit_codes": [seq["exit_code"], full["exit_code"]],
        "bounds_at_decision": section["gates"]["min_robust_acc"]["bounds"],
        "load": [seq["load_before"], full["load_after"]],
        "commands": [seq["command"], full["command"]],
    }


def table(rows: list[dict[str, Any]], n: int) -> str:
    lines = [
        "| target | ε | gate on | seed | full robust acc | distance to cut | full verdict | images to decision | "
        "sequential s | full s | time ratio | same verdict | images differing from the full run |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        images = f"{r['images']} ({r['images'] / n:.0%})" + ("" if r["decided_at"] else ", ran to the end")
        shared = " (the point run's)" if r["full_run"].split("-")[1] != r["gate_on"] else ""
        lines.append(
            f"| {r['target']:.2f} | {r['eps_255']:g}/255 | {r['gate_on']} | {r['seed']} | "
            f"{r['full_robust_accuracy']:.3f} | "
            f"{r['distance']:.3f} | {r['full_verdict']} | {images} | {r['sequential_seconds']:.0f} | "
            f"{r['full_seconds']:.0f}{shared} | {r['time_ratio']:.2f} | {'yes' if r['same_verdict'] else 'NO'} | "
            f"{r['samples_disagree']} of {r['images']} |"
        )
    return "\n".join(lines)


def findings(rows: list[dict[str, Any]], n: int) -> str:
    """The issue's two targets, read off the rows."""
    far = [r for r in rows if r["distance"] >= 0.15]
    parts = []
    if far:
        parts.append(
            f"At a distance >= 0.15 from the cut ({len(far)} settings): at most {max(r['images'] for r in far)} "
            f"images ({max(r['images'] for r in far) / n:.0%} of n; target <= 25%), time ratio "
            f"{min(r['time_ratio'] for r in far):.2f}–{max(r['time_ratio'] for r in far):.2f}."
        )
    parts.append(
        f"Never more than the full run plus one round: "
        f"{'yes' if all(r['within_full_plus_one_round'] for r in rows) else 'NO'} "
        f"({sum(r['within_full_plus_one_round'] for r in rows)}/{len(rows)} settings)."
    )
    parts.append(
        f"Early verdict = full run's: {sum(r['same_verdict'] for r in rows)}/{len(rows)}. Images whose result "
        f"differs from the run without --sequential (random starts per image vs per batch): at most "
        f"{max(r['samples_disagree'] for r in rows)} per setting."
    )
    return " ".join(parts)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    log = minutes_log()
    args.out.mkdir(parents=True, exist_ok=True)
    started, load_start = time.time(), os.getloadavg()
    model = clean_model(args, log)
    points = calibrate(model, args, log)
    lower = {float(v) for v in args.lower_targets.split(",") if v}
    plan = []
    for target in [float(v) for v in args.targets.split(",")]:
        eps255, how = eps_for(target, points)
        log(f"target {target:.2f}: eps {eps255:g}/255 ({how})")
        plan += [(target, eps255, "point", how)] + ([(target, eps255, "lower", how)] if target in lower else [])
    rows = []
    for index, (target, eps255, gate_on, how, seed) in enumerate(
        (*setting, seed) for seed in [int(v) for v in args.seeds.split(",")] for setting in plan
    ):
        row = {**run_setting(model, args, target, eps255, gate_on, seed, index), "eps_chosen": how}
        log(
            f"target {target:.2f} ({gate_on}, seed {seed}): full {row['full_robust_accuracy']:.3f} "
            f"{row['full_verdict']} in "
            f"{row['full_seconds']:.0f} s; sequential {row['sequential_verdict']} after {row['images']} images in "
            f"{row['sequential_seconds']:.0f} s (ratio {row['time_ratio']:.2f})"
        )
        rows.append(row)
    meta = {
        "model": str(model),
        "model_sha256": file_sha256(model),
        "data": str(TEST_DATA),
        "n": args.n,
        "suite": args.suite,
        "batch_size": args.batch_size,
        "threshold": args.threshold,
        "seed": args.seed,
        "seeds": args.seeds,
        "threads": args.threads,
        "calibration_n": args.calibration_n,
        "calibration": points,
        "load_start": load_start,
        "load_end": os.getloadavg(),
        "wall_minutes": (time.time() - started) / 60,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "argv": sys.argv,
    }
    atomic_write(args.out / "results.json", json.dumps({"meta": meta, "rows": rows}, indent=1))
    section = f"{HEADING}\n\n{table(rows, args.n)}\n\n{findings(rows, args.n)}\n"
    print(section)
    if args.results_md:
        update_section(HEADING, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
