"""Does streaming photos keep memory flat in n, and is the loader ever what training waits for?

Prints, measured in one run on real photos (imagewoof: 1500 JPEGs of 10 dog breeds, short side 320 px):
  1. peak RSS of `hardenctl eval --attacks fgsm` at two values of n (fresh process each)   (target growth < 10%)
  2. peak RSS of one `hardenctl harden` epoch (pgd-at, 1 attack step, timm's train transform, --workers 2)
     on folders of n1 and n2 training photos (fresh process each)                          (target growth < 10%)
  3. images/s of the eval loader (FolderDataset.batches) and of the training loader (TrainDataset + make_loader,
     built exactly as hardenctl/training/batches.py builds it) with 0, 1 and 2 workers, against images/s of one
     PGD-AT training step (attack_steps 10 and 1): is the loader the bottleneck? Also PGD-AT-1 steps fed by the
     training loader (0 and 2 workers) against the same steps on a batch held in memory, timed right after.

The model is a random-init timm `resnet10t` saved as .safetensors with input_size 128,128 declared (we measure
memory and speed, not accuracy). The photos are never copied: class-folder trees of symlinks are built in a
temporary directory (train/ and val/ of each class together, so one folder holds all 1500).

Peak RSS is read two ways: `ru_maxrss` of the hardenctl process from wait4 (the largest single process: the main
process or a DataLoader worker it reaped), and the peak of the summed RSS of the whole process tree (main +
workers), sampled from /proc every --sample-s seconds: an upper bound, as pages a forked worker still shares with
the main process count twice. The summed PSS is recorded too, but it also divides library pages with unrelated
processes that map the same files (other torch jobs on a shared machine), so it moves with what else runs.

    python benchmarks/bench_data.py [--quick] [--eval-n 250,1500] [--harden-n 250,1500] [--size 128]
                                    [--workers 0,1,2] [--harden-workers 2] [--eval-workers 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import IMAGENET_MEAN, IMAGENET_STD, IMAGEWOOF, run_times

RSS_TARGET = 1.10  # n2 / n1 peak RSS must stay below this


# ---------------------------------------------------------------------------------------------- setup
def build_trees(source: Path, root: Path, sizes: list[int], at_least: int = 0) -> tuple[Path, dict[int, Path]]:
    """``root/all``: every photo of train/ and val/ as symlinks, one folder per class, repeated under new names until
    it holds ``at_least`` (an ImageNet-val-scale n from 1500 photos: memory depends on n, not on the photos being
    distinct); ``root/n<k>``: the first k/classes of each class (train files first), so every tree is class-balanced."""
    classes = sorted(p.name for p in (source / "train").iterdir() if p.is_dir())
    files = {c: [f for split in ("train", "val") for f in sorted((source / split / c).iterdir())] for c in classes}

    def tree(name: str, per_class: int | None, repeats: int = 1) -> Path:
        for c in classes:
            folder = root / name / c
            folder.mkdir(parents=True, exist_ok=True)
            for r in range(repeats):
                for f in files[c][:per_class]:
                    (folder / f"{f'r{r}_' if r else ''}{f.parent.parent.name}_{f.name}").symlink_to(f)
        return root / name

    total = sum(len(v) for v in files.values())
    everything = tree("all", None, max(1, -(-at_least // total)))
    subsets = {}
    for k in sizes:
        if k > total or k % len(classes):
            raise SystemExit(f"n={k}: must be a multiple of {len(classes)} and at most {total}")
        subsets[k] = everything if k == total else tree(f"n{k}", k // len(classes))
    return everything, subsets


def make_model(path: Path, arch: str, size: int) -> None:
    from hardenctl.models import create_timm_model, save_model, wrap_model

    torch.manual_seed(0)
    net = create_timm_model(arch, num_classes=10, in_chans=3, input_size=(size, size))
    model = wrap_model(net, arch, 10, IMAGENET_MEAN, IMAGENET_STD, input_size=(size, size))
    save_model(model, path)


# ------------------------------------------------------------------------------------------ memory
def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def _tree_memory(pid: int) -> tuple[float, float, int]:
    """(summed RSS MB, summed PSS MB, processes) of ``pid`` and its descendants, now."""
    kids, todo, rss, pss, count = _children(), [pid], 0, 0, 0
    while todo:
        p = todo.pop()
        todo.extend(kids.get(p, []))
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1])
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1])
            count += 1
        except OSError:
            continue
    return rss / 1024, pss / 1024, count


def run_measured(cmd: list[str], env: dict[str, str], log: Path, sample_s: float) -> dict:
    """Run ``cmd`` in a fresh process; its peak RSS (wait4 ru_maxrss), peak tree RSS/PSS (sampled), wall time."""
    started = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        peak_rss = peak_pss = 0.0
        peak_procs = 0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            rss, pss, procs = _tree_memory(proc.pid)
            peak_rss, peak_pss, peak_procs = max(peak_rss, rss), max(peak_pss, pss), max(peak_procs, procs)
            time.sleep(sample_s)
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4 above; keep Popen from waiting again
    return {
        "rc": proc.returncode,
        "seconds": time.perf_counter() - started,
        "maxrss_mb": usage.ru_maxrss / 1024,
        "tree_rss_mb": peak_rss,
        "tree_pss_mb": peak_pss,
        "processes": peak_procs,
        "log": str(log),
    }


def child_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[key] = str(threads)
    return env


def check_rc(result: dict, what: str, report: Path) -> None:
    if result["rc"] not in (0, 1) or not report.is_file():  # 1 with a report = a gate failed: still a complete run
        tail = Path(result["log"]).read_text()[-2000:]
        raise SystemExit(f"{what} failed (exit {result['rc']}):\n{tail}")


def eval_rss(args, model: Path, data: Path, work: Path) -> dict[int, dict]:
    hardenctl = shutil.which("hardenctl") or "hardenctl"
    results = {}
    for n in args.eval_n:
        (work / f"eval{n}.json").unlink(missing_ok=True)
        cmd = [
            hardenctl,
            "eval",
            str(model),
            "--data",
            str(data),
            "--attacks",
            "fgsm",
            "--n",
            str(n),
            "--workers",
            str(args.eval_workers),
            "--device",
            "cpu",
            "--quiet",
            "--report",
            str(work / f"eval{n}.json"),
        ]
        result = run_measured(cmd, child_env(args.threads), work / f"eval{n}.log", args.sample_s)
        check_rc(result, f"eval n={n}", work / f"eval{n}.json")
        report = json.loads((work / f"eval{n}.json").read_text())
        result.update(n_evaluated=report["n"], cmd=" ".join(cmd[1:]).replace(str(work), "$TMP"))
        results[n] = result
        print(
            f"  eval n={n:5d}: peak RSS {result['maxrss_mb']:7.0f} MB (largest process), tree RSS "
            f"{result['tree_rss_mb']:7.0f} MB (tree PSS {result['tree_pss_mb']:.0f} MB, up to {result['processes']} "
            f"processes), {result['seconds']:.0f} s, exit {result['rc']}, n evaluated {report['n']}",
            flush=True,
        )
    return results


def harden_rss(args, model: Path, trees: dict[int, Path], work: Path) -> dict[int, dict]:
    hardenctl = shutil.which("hardenctl") or "hardenctl"
    results = {}
    for n in args.harden_n:
        out = work / f"harden{n}"
        shutil.rmtree(out, ignore_errors=True)
        cmd = [
            hardenctl,
            "harden",
            str(model),
            "--data",
            str(trees[n]),
            "--out",
            str(out),
            "--recipe",
            "pgd-at",
            "--epochs",
            "1",
            "--set",
            "attack_steps=1",
            "--batch-size",
            str(args.batch),
            "--eval-n",
            "32",
            "--suite",
            "quick",
            "--set",
            "monitor_n=32",
            "--workers",
            str(args.harden_workers),
            "--device",
            "cpu",
            "--quiet",
        ]
        result = run_measured(cmd, child_env(args.threads), work / f"harden{n}.log", args.sample_s)
        check_rc(result, f"harden n={n}", out / "report.json")
        epoch = json.loads((out / "train_log.jsonl").read_text().splitlines()[0])
        report = json.loads((out / "report.json").read_text())
        train_n = report.get("data", {}).get("train_n")
        result.update(
            train_n=train_n,
            epoch_train_seconds=epoch["train_seconds"],
            epoch_images_per_second=epoch["images_per_second"],
            cmd=" ".join(cmd[1:]).replace(str(work), "$TMP"),
        )
        results[n] = result
        print(
            f"  harden n={n:5d} ({train_n} trained on): peak RSS {result['maxrss_mb']:7.0f} MB (largest process), tree "
            f"RSS {result['tree_rss_mb']:7.0f} MB (tree PSS {result['tree_pss_mb']:.0f} MB, up to "
            f"{result['processes']} processes), {result['seconds']:.0f} s, epoch {epoch['train_seconds']:.0f} s = "
            f"{epoch['images_per_second']:.1f} img/s, exit {result['rc']}",
            flush=True,
        )
    return results


# -------------------------------------------------------------------------------------- throughput
def loader_throughput(args, model_path: Path, data: Path) -> dict:
    """images/s of one full pass of each loader over the first --loader-n photos (worker start-up included: every
    pass builds its own DataLoader, as evaluation and every training epoch do). Best of --loader-repeats."""
    from hardenctl.api import load_data, load_model
    from hardenctl.recipes import load_recipe
    from hardenctl.training import EpochPlan
    from hardenctl.training.batches import epoch_batches

    model = load_model(model_path)
    config = model.info.data_config
    recipe = load_recipe("pgd-at", {"batch_size": args.batch})
    results: dict = {"eval": {}, "train": {}}
    for workers in args.workers:
        eval_set = load_data(str(data), model, n=args.loader_n, workers=workers)

        def eval_pass():
            count = 0
            for _, x, _ in eval_set.batches(args.batch):
                count += len(x)
            assert count == len(eval_set)

        times = run_times(eval_pass, args.loader_repeats)
        results["eval"][workers] = {
            "images": len(eval_set),
            "seconds": times,
            "images_per_second": len(eval_set) / min(times),
        }

        train_set = load_data(str(data), model, split="train", workers=workers).head(args.loader_n)
        steps = len(train_set) // args.batch
        order = torch.from_numpy(np.random.default_rng(0).permutation(len(train_set)))

        plan = EpochPlan(train_set, args.batch, steps, config, 3)

        def train_pass():
            count = 0
            for x, _ in epoch_batches(plan, order, 0, recipe.config, 0, workers):
                assert x.dtype == torch.float32 and tuple(x.shape[2:]) == (args.size, args.size)
                count += len(x)
            assert count == steps * args.batch

        times = run_times(train_pass, args.loader_repeats)
        results["train"][workers] = {
            "images": steps * args.batch,
            "seconds": times,
            "images_per_second": steps * args.batch / min(times),
        }
        print(
            f"  workers {workers}: eval loader {results['eval'][workers]['images_per_second']:7.1f} img/s, "
            f"train loader {results['train'][workers]['images_per_second']:7.1f} img/s "
            f"(passes: eval {', '.join(f'{t:.1f}' for t in results['eval'][workers]['seconds'])} s; "
            f"train {', '.join(f'{t:.1f}' for t in results['train'][workers]['seconds'])} s)",
            flush=True,
        )
    return results


def _trainer(model_path: Path, data: Path, batch: int, attack_steps: int):
    """A fresh model, optimiser and PGD-AT attack; returns (step(x, y), one real augmented batch, recipe, model)."""
    from hardenctl.api import load_data, load_model
    from hardenctl.recipes import load_recipe
    from hardenctl.training import EpochPlan
    from hardenctl.training.batches import epoch_batches
    from hardenctl.training.steps import TrainingPGD, training_step

    model = load_model(model_path)
    recipe = load_recipe("pgd-at", {"batch_size": batch, "attack_steps": attack_steps})
    first = load_data(str(data), model, split="train", workers=0).head(batch)
    plan = EpochPlan(first, batch, 1, model.info.data_config, 3)
    x, y = next(iter(epoch_batches(plan, torch.arange(batch), 0, recipe.config, 0, 0)))
    # plain SGD (momentum 0.9, wd 5e-4: PGD-AT's optimiser) rather than the recipe's `lr: auto` resolution: same
    # cost per step
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    attack = TrainingPGD.for_recipe(recipe)
    count = [0]

    def step(x, y):
        model.train()
        attack.generator = torch.Generator().manual_seed(count[0])
        count[0] += 1
        loss = training_step(model, model, recipe, attack, x, y, contextlib.nullcontext)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step, (x, y), recipe, model


def training_throughput(args, model_path: Path, data: Path) -> dict:
    """images/s of one PGD-AT step (attack in eval mode, CE + backward + SGD step in train mode), as the harden loop
    runs it, on one real augmented batch held in memory; median of --step-repeats after one warm-up."""
    results = {}
    for attack_steps in args.attack_steps:
        step, (x, y), _, _ = _trainer(model_path, data, args.batch, attack_steps)
        step(x, y)  # warm-up
        times = run_times(lambda: step(x, y), args.step_repeats)
        results[attack_steps] = {"seconds": times, "images_per_second": args.batch / statistics.median(times)}
        print(
            f"  PGD-AT step, attack_steps {attack_steps:2d}: {statistics.median(times):6.2f} s per batch of "
            f"{args.batch} = {results[attack_steps]['images_per_second']:6.1f} img/s (steps: "
            f"{', '.join(f'{t:.2f}' for t in times)} s)",
            flush=True,
        )
    return results


def fed_throughput(args, model_path: Path, data: Path) -> dict:
    """images/s of PGD-AT steps fed by the training loader (epoch_batches, as the harden loop feeds them) over
    --fed-n photos, loader start-up included, after a warm-up step: decoding and training share the cores here.
    Compared with --step-repeats steps on a batch held in memory, timed right after on the same model."""
    from hardenctl.api import load_data
    from hardenctl.training import EpochPlan
    from hardenctl.training.batches import epoch_batches

    results: dict = {}
    for attack_steps in args.fed_steps:
        results[attack_steps] = {}
        for workers in args.fed_workers:
            step, (x, y), recipe, model = _trainer(model_path, data, args.batch, attack_steps)
            step(x, y)  # warm-up
            train_set = load_data(str(data), model, split="train", workers=workers).head(args.fed_n)
            steps = len(train_set) // args.batch
            order = torch.from_numpy(np.random.default_rng(1).permutation(len(train_set)))
            started = time.perf_counter()
            plan = EpochPlan(train_set, args.batch, steps, model.info.data_config, 3)
            for x, y in epoch_batches(plan, order, 0, recipe.config, 0, workers):
                step(x, y)
            seconds = time.perf_counter() - started
            # the same steps on the batch held in memory, right after (the load of a shared machine drifts over minutes)
            bare = run_times(lambda: step(x, y), args.step_repeats)
            fed, alone = steps * args.batch / seconds, args.batch / statistics.median(bare)
            results[attack_steps][workers] = {
                "seconds": seconds,
                "images_per_second": fed,
                "bare_seconds": bare,
                "bare_images_per_second": alone,
                "fed_over_bare": fed / alone,
            }
            print(
                f"  PGD-AT-{attack_steps} fed by the training loader, {workers} workers: {steps} steps in "
                f"{seconds:.1f} s = {fed:.1f} img/s; on a batch in memory right after: {alone:.1f} img/s; ratio "
                f"{fed / alone:.2f}",
                flush=True,
            )
    return results


# ------------------------------------------------------------------------------------------------ main
def ratio_line(what: str, results: dict[int, dict], key: str, label: str) -> tuple[float, str]:
    n1, n2 = min(results), max(results)
    ratio = results[n2][key] / results[n1][key]
    return ratio, (
        f"{what}: {label} n={n2} / n={n1} = {results[n2][key]:.0f} / {results[n1][key]:.0f} MB = {ratio:.3f} "
        f"(growth {100 * (ratio - 1):+.1f}%, target < +{100 * (RSS_TARGET - 1):.0f}%: "
        f"{'met' if ratio < RSS_TARGET else 'NOT met'})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ints = lambda text: [int(v) for v in text.split(",")]  # noqa: E731
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test (sets small n values, 96 loader photos, one repeat, attack_steps 1; overrides those options)",
    )
    parser.add_argument("--data", type=Path, default=IMAGEWOOF, help="imagewoof root (train/ and val/ class folders)")
    parser.add_argument("--arch", default="resnet10t")
    parser.add_argument("--size", type=int, default=128, help="model input size (square), declared in the checkpoint")
    parser.add_argument(
        "--eval-n",
        type=ints,
        default=[250, 1500],
        help="n values for the eval RSS runs (above the 1500 photos, they are repeated under new names)",
    )
    parser.add_argument(
        "--harden-n", type=ints, default=[250, 1500], help="training-folder sizes for the harden RSS runs"
    )
    parser.add_argument("--eval-workers", type=int, default=2)
    parser.add_argument("--harden-workers", type=int, default=2)
    parser.add_argument("--workers", type=ints, default=[0, 1, 2], help="worker counts for the loader throughput")
    parser.add_argument("--batch", type=int, default=32, help="loader and training batch size")
    parser.add_argument("--loader-n", type=int, default=512, help="photos per loader pass")
    parser.add_argument("--loader-repeats", type=int, default=2)
    parser.add_argument("--attack-steps", type=ints, default=[10, 1])
    parser.add_argument("--step-repeats", type=int, default=3)
    parser.add_argument("--fed-steps", type=ints, default=[1], help="attack_steps of the loader-fed training runs")
    parser.add_argument(
        "--fed-workers", type=ints, default=[0, 2], help="worker counts of the loader-fed training runs"
    )
    parser.add_argument("--fed-n", type=int, default=384, help="photos per loader-fed training run")
    parser.add_argument("--threads", type=int, default=1, help="torch threads here and in the hardenctl processes")
    parser.add_argument("--sample-s", type=float, default=0.2, help="process-tree memory sampling interval")
    parser.add_argument("--parts", default="eval,harden,throughput", help="subset of eval,harden,throughput")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temp dir, removed)")
    parser.add_argument("--json", type=Path, help="also write every number to this JSON file")
    args = parser.parse_args()
    if args.quick:
        args.eval_n, args.harden_n = (
            [128, 256],
            [100, 200],
        )  # eval: full batches of 128 at both n (a short batch needs less)
        args.loader_n, args.loader_repeats, args.step_repeats, args.attack_steps, args.fed_n = 96, 1, 1, [1], 64
    parts = set(args.parts.split(","))
    torch.set_num_threads(args.threads)

    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="bench_data_")) if args.keep is None else args.keep
    work.mkdir(parents=True, exist_ok=True)
    try:
        everything, trees = build_trees(
            args.data,
            work / "trees",
            args.harden_n if "harden" in parts else [],
            max(args.eval_n) if "eval" in parts else 0,
        )
        model = work / f"{args.arch}-{args.size}.safetensors"
        make_model(model, args.arch, args.size)
        import timm

        import hardenctl

        print(
            f"hardenctl {hardenctl.__version__}, torch {torch.__version__}, timm {timm.__version__}, {args.threads} "
            f"torch thread(s), CPU cores visible {len(os.sched_getaffinity(0))}, load average {os.getloadavg()[0]:.1f} "
            "at start"
        )
        print(
            f"model: {args.arch}, random init, input {args.size}x{args.size} declared; data: {args.data} "
            f"({sum(1 for _ in everything.rglob('*.*'))} photos as symlinks in {work})"
        )
        out: dict = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}

        if "eval" in parts:
            print(f"\n1. peak RSS of `hardenctl eval --attacks fgsm` (workers {args.eval_workers}, fresh process each)")
            out["eval_rss"] = eval_rss(args, model, everything, work)
        if "harden" in parts:
            print(
                f"\n2. peak RSS of one `hardenctl harden` epoch (pgd-at, attack_steps 1, batch {args.batch}, "
                f"augment auto = timm, workers {args.harden_workers}, fresh process each)"
            )
            out["harden_rss"] = harden_rss(args, model, trees, work)
        if "throughput" in parts:
            print(
                f"\n3. loader throughput at {args.size} px, batch {args.batch}, {args.loader_n} photos per pass (best "
                f"of {args.loader_repeats}; worker start-up included)"
            )
            out["loaders"] = loader_throughput(args, model, everything)
            print(
                f"   training throughput, {args.arch} at {args.size} px, batch {args.batch}, {args.threads} thread(s) "
                f"(median of {args.step_repeats} after a warm-up)"
            )
            out["training"] = training_throughput(args, model, everything)
            print(f"   the same steps fed by the training loader ({args.fed_n} photos, loader start-up included)")
            out["fed"] = fed_throughput(args, model, everything)

        print("\nSummary")
        for part, label in (("eval_rss", "eval"), ("harden_rss", "harden epoch")):
            if part in out and len(out[part]) >= 2:
                for key, what in (("maxrss_mb", "peak RSS"), ("tree_rss_mb", "peak tree RSS")):
                    ratio, line = ratio_line(label, out[part], key, what)
                    out.setdefault("ratios", {})[f"{part}.{key}"] = ratio
                    print("  " + line)
        if "loaders" in out and "training" in out:
            fastest_training = max(v["images_per_second"] for v in out["training"].values())
            for kind in ("eval", "train"):
                for workers, value in out["loaders"][kind].items():
                    loader = value["images_per_second"]
                    verdict = "the loader IS the bottleneck" if loader < fastest_training else "not the bottleneck"
                    against = ", ".join(
                        f"{loader / v['images_per_second']:.1f}x PGD-AT-{k}" for k, v in out["training"].items()
                    )
                    print(f"  {kind} loader, {workers} workers: {loader:.1f} img/s = {against}: {verdict}")
            for steps, value in out["training"].items():
                print(f"  PGD-AT attack_steps {steps}: {value['images_per_second']:.1f} img/s")
            for steps, by_workers in out.get("fed", {}).items():
                for workers, value in by_workers.items():
                    print(
                        f"  PGD-AT-{steps} fed by the loader, {workers} workers: {value['images_per_second']:.1f} "
                        f"img/s = {value['fed_over_bare']:.2f} x the same steps on a batch in memory "
                        f"({value['bare_images_per_second']:.1f} img/s)"
                    )
            if "harden_rss" in out:
                for n, value in out["harden_rss"].items():
                    print(
                        f"  harden n={n} epoch, end to end (loader workers and training sharing the cores): "
                        f"{value['epoch_images_per_second']:.1f} img/s"
                    )
        total = time.perf_counter() - started
        out["seconds"] = total
        print(f"\ntotal {total:.0f} s; load average {os.getloadavg()[0]:.1f} at end")
        if args.json:
            args.json.write_text(json.dumps(out, indent=2, default=str) + "\n")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
