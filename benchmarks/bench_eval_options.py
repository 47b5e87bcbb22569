"""What ``--batch-size auto`` and ``--eval-precision bf16`` buy, through ``hardenctl.evaluate`` itself (issue 20).

On the same CIFAR-10 test images, model (the PGD-trained resnet10t of ``bench_attacks.py --vs-autoattack``, cached in
benchmarks/out/) and seed, in one process, it prints:

  * the ``standard`` suite's wall time and robust accuracy at ``auto`` and at each ``--batch-sizes``, run in pairs
    (auto, then the size), and each time over auto's: is the largest batch that fits also the fastest here?
  * the suite with the search in fp32 and in bf16 autocast (verdicts fp32 in both): robust accuracy, points broken
    per attack, and the points one search broke that the other did not. On a CPU this measures bf16's *strength*
    (the same rounding as on a GPU); its speed is the GPU's business (``device_check.py``).

    python benchmarks/bench_eval_options.py [--n 200] [--threads 1] [--batch-sizes 25,50,100] [--precisions fp32,bf16]
"""

from __future__ import annotations

import argparse
import time

import torch
from bench_attacks import robust_model
from common import CIFAR

from hardenctl.data import load_dataset
from hardenctl.evaluation import EvalConfig, evaluate


def run(model, data, batch_size, precision: str, seed: int):
    started = time.perf_counter()
    report = evaluate(
        model,
        data,
        EvalConfig(
            eps=8 / 255, n=len(data), batch_size=batch_size, precision=precision, seed=seed, large_eps_samples=0
        ),
    )
    seconds = time.perf_counter() - started
    robust = torch.tensor(report.samples.robust) if report.samples is not None else None
    return seconds, report, robust


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-sizes", default="25,50,100", help="fixed batch sizes timed beside auto ('' for none)")
    parser.add_argument(
        "--precisions", default="fp32,bf16", help="search precisions compared at batch auto ('' for none)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = robust_model()
    data = load_dataset(str(CIFAR / "test.npz"), n=args.n)
    print(
        f"resnet10t PGD-trained, CIFAR-10 test[:{args.n}], standard suite, L-inf 8/255, seed {args.seed}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}",
        flush=True,
    )

    sizes = [int(v) for v in args.batch_sizes.split(",") if v]
    for size in sizes:  # auto then the fixed size, pair by pair: a load change hits both halves of a ratio alike
        auto_seconds, auto_report, _ = run(model, data, "auto", "fp32", args.seed)
        seconds, report, _ = run(model, data, size, "fp32", args.seed)
        print(
            f"batch auto ({auto_report.execution['batch_size']}) {auto_seconds:7.1f} s  robust "
            f"{auto_report.robust_accuracy:.3f}; batch {size} {seconds:7.1f} s  robust {report.robust_accuracy:.3f}; "
            f"time / auto's {seconds / auto_seconds:.2f}",
            flush=True,
        )

    precisions = [v for v in args.precisions.split(",") if v]
    results = {}
    for precision in precisions:
        seconds, report, robust = run(model, data, "auto", precision, args.seed)
        results[precision] = robust
        broken = ", ".join(f"{name} {w['broken']}" for name, w in report.work.items())
        print(
            f"search {precision}  {seconds:7.1f} s  robust {report.robust_accuracy:.3f} "
            f"(verdict {report.execution['verdict_precision']})  broken per attack: {broken}",
            flush=True,
        )
    if {"fp32", "bf16"} <= results.keys() and results["fp32"] is not None:
        fp32, bf16 = results["fp32"].bool(), results["bf16"].bool()
        print(
            f"points fp32 search broke and bf16 did not: {int((bf16 & ~fp32).sum())}; "
            f"bf16 broke and fp32 did not: {int((fp32 & ~bf16).sum())}; "
            f"robust points bf16 - fp32: {int(bf16.sum()) - int(fp32.sum())} (target <= 0)"
        )


if __name__ == "__main__":
    main()
