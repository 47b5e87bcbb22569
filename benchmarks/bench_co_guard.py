"""Looking for catastrophic overfitting on real runs: does one-step (FGSM) training collapse, and does the guard fire?

The issue-13 guard (``co_guard``) watches ``attack: fgsm-rs`` / ``fgsm`` runs: a collapse is held-out PGD accuracy
falling ``co_drop`` below the best earlier epoch while FGSM accuracy holds. Its firing is unit-tested with scripted
monitor values; this script runs real one-step trainings meant to overfit (no random start, large steps, large ε,
high lr, large models, robust starting points) with ``co_guard: warn`` and prints, per run, the held-out PGD-10
curve, the FGSM curve and whether the guard fired.

    python benchmarks/bench_co_guard.py [--set digits|digits32|cifar|all] [--threads 1] [--seeds 0,1,2]

``digits``: scikit-learn's 8×8 digits (1,437 training images, 10% held out), timm ``test_resnet``/``resnet10t``/
``resnet18`` trained cleanly for 4 epochs, or first hardened with PGD-AT (``robust``). ``cifar``: the first N images
of ``../shared/data/cifar10/train.npz`` from a clean resnet10t (``--cifar-model``, e.g. the finetune study's input).
``digits32``: the setting that does collapse. The same digits shown to a ``test_resnet`` (or ``resnet10t``) made for
32×32 input, so they go through the model's own eval transform (test_resnet: bilinear to 33 px, centre crop 32),
trained cleanly for 4 epochs, then 30 epochs of FGSM at ε = 0.2 with SGD at a constant lr 0.2 (every collapse we saw
came in a run whose lr never decayed), without and with a random start, one pair per ``--seeds`` entry.
Seconds are on whatever the machine is doing; only the curves matter here.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import CIFAR

from hardenctl.data import load_dataset
from hardenctl.demo import make_demo_model
from hardenctl.models import load_model
from hardenctl.recipes import load_recipe
from hardenctl.training import HardenOptions, harden

PAPER = {"profile": "paper", "batch_size": 32}  # lr 0.1 SGD, the high-lr regime where collapses are reported
# (name, start model, overrides): start is "clean:ARCH" or "robust:EPS" (test_resnet after 15 PGD-AT epochs at EPS)
DIGITS_RUNS = [
    ("fgsm 0.2, 6 ep", "clean:test_resnet", {**PAPER, "attack": "fgsm", "eps": 0.2, "epochs": 6, "batch_size": 128}),
    (
        "fgsm 0.3 (step 2ε = ε after projection), 6 ep",
        "clean:test_resnet",
        {**PAPER, "attack": "fgsm", "eps": 0.3, "epochs": 6, "batch_size": 128},
    ),
    (
        "fgsm-rs 0.2, 6 ep",
        "clean:test_resnet",
        {**PAPER, "attack": "fgsm-rs", "eps": 0.2, "epochs": 6, "batch_size": 128},
    ),
    ("fgsm 0.1, 30 ep", "clean:test_resnet", {**PAPER, "attack": "fgsm", "eps": 0.1, "epochs": 30}),
    ("fgsm 0.15, 30 ep", "clean:test_resnet", {**PAPER, "attack": "fgsm", "eps": 0.15, "epochs": 30}),
    ("fgsm 0.2, 30 ep", "clean:test_resnet", {**PAPER, "attack": "fgsm", "eps": 0.2, "epochs": 30}),
    ("fgsm 0.3, 30 ep", "clean:test_resnet", {**PAPER, "attack": "fgsm", "eps": 0.3, "epochs": 30}),
    ("fgsm-rs 0.15, 30 ep", "clean:test_resnet", {**PAPER, "attack": "fgsm-rs", "eps": 0.15, "epochs": 30}),
    (
        "fgsm-rs 0.3 step 2ε, 30 ep",
        "clean:test_resnet",
        {**PAPER, "attack": "fgsm-rs", "eps": 0.3, "fgsm_step": 2.0, "epochs": 30},
    ),
    ("fgsm 0.2, 30 ep", "clean:resnet10t", {**PAPER, "attack": "fgsm", "eps": 0.2, "epochs": 30}),
    (
        "fgsm-rs 0.2 step 2ε, 30 ep",
        "clean:resnet10t",
        {**PAPER, "attack": "fgsm-rs", "eps": 0.2, "fgsm_step": 2.0, "epochs": 30},
    ),
    ("fgsm 0.2, 20 ep", "clean:resnet18", {**PAPER, "attack": "fgsm", "eps": 0.2, "epochs": 20}),
    ("fgsm 0.2, 10 ep", "robust:0.2", {**PAPER, "attack": "fgsm", "eps": 0.2, "epochs": 10}),
    ("fgsm 0.2, lr 0.3, 10 ep", "robust:0.2", {**PAPER, "attack": "fgsm", "eps": 0.2, "lr": 0.3, "epochs": 10}),
    (
        "fgsm-rs 0.3 step 2ε, 10 ep",
        "robust:0.3",
        {**PAPER, "attack": "fgsm-rs", "eps": 0.3, "fgsm_step": 2.0, "epochs": 10},
    ),
    ("fgsm 0.3, 10 ep", "robust:0.3", {**PAPER, "attack": "fgsm", "eps": 0.3, "epochs": 10}),
    (
        "fgsm-rs 0.3 step 2.5ε, lr 0.3, 10 ep",
        "robust:0.3",
        {**PAPER, "attack": "fgsm-rs", "eps": 0.3, "fgsm_step": 2.5, "lr": 0.3, "epochs": 10},
    ),
]
CONSTANT = {
    "profile": "paper",
    "schedule": "constant",
    "lr": 0.2,
    "batch_size": 64,
    "eps": 0.2,
    "attack_alpha": 0.05,
    "epochs": 30,
}
# (name, arch, overrides): one-step training on digits upscaled to 32 px; the seed comes from --seeds
DIGITS32_RUNS = [
    (
        "fgsm 0.2 (no random start), lr 0.2 constant, 30 ep",
        "test_resnet",
        {**CONSTANT, "attack": "fgsm", "fgsm_step": 1.0},
    ),
    (
        "fgsm-rs 0.2 step 1.25ε, lr 0.2 constant, 30 ep",
        "test_resnet",
        {**CONSTANT, "attack": "fgsm-rs", "fgsm_step": 1.25},
    ),
]
DIGITS32_EXTRA = [  # run once (seed 0): the larger model
    (
        "fgsm 0.2 (no random start), lr 0.2 constant, 30 ep",
        "resnet10t",
        {**CONSTANT, "attack": "fgsm", "fgsm_step": 1.0},
    ),
    (
        "fgsm-rs 0.2 step 1.25ε, lr 0.2 constant, 30 ep",
        "resnet10t",
        {**CONSTANT, "attack": "fgsm-rs", "fgsm_step": 1.25},
    ),
]
CIFAR_RUNS = [  # (name, training images, overrides) from the clean CIFAR model
    (
        "fgsm 16/255, paper lr 0.1, 6 ep",
        2000,
        {"attack": "fgsm", "eps": 16 / 255, "profile": "paper", "epochs": 6, "batch_size": 64},
    ),
    (
        "fgsm 8/255, paper lr 0.1, 6 ep",
        2000,
        {"attack": "fgsm", "eps": 8 / 255, "profile": "paper", "epochs": 6, "batch_size": 64},
    ),
    (
        "fgsm 16/255, finetune, 6 ep",
        2000,
        {"attack": "fgsm", "eps": 16 / 255, "epochs": 6, "batch_size": 64, "eps_warmup": 0},
    ),
    (
        "fgsm 16/255, finetune lr 0.02, 6 ep",
        2000,
        {"attack": "fgsm", "eps": 16 / 255, "epochs": 6, "batch_size": 64, "lr": 0.02, "eps_warmup": 0},
    ),
    (
        "fgsm 8/255, lr 0.05, 4 ep",
        10000,
        {"attack": "fgsm", "eps": 8 / 255, "epochs": 4, "batch_size": 128, "lr": 0.05, "eps_warmup": 0},
    ),
]


def digits_start(spec: str, work: Path) -> Path:
    """The starting checkpoint of a digits run (cached in ``work``)."""
    kind, value = spec.split(":")
    arch = "test_resnet" if kind == "robust" else value
    clean = work / f"clean-{arch}" / "model.safetensors"
    if not clean.is_file():
        make_demo_model(clean.parent, seed=0, epochs=4, arch=arch)
    if kind == "clean":
        return clean
    robust = work / f"robust-{value}"
    if not (robust / "model.safetensors").is_file():
        train(
            clean,
            {**PAPER, "attack": "pgd", "eps": float(value), "attack_alpha": float(value) / 4, "epochs": 15},
            load_dataset("digits-train"),
            load_dataset("digits-test"),
            robust,
        )
    return robust / "model.safetensors"


def digits32_start(arch: str, seed: int, work: Path) -> Path:
    """A model made for 32×32 input, trained cleanly on digits seen through its own eval transform (cached)."""
    path = work / f"clean32-{arch}-{seed}" / "model.safetensors"
    return path if path.is_file() else make_demo_model(path.parent, seed=seed, epochs=4, arch=arch, input_size=(32, 32))


def train(start: Path, overrides: dict, data, eval_data, out: Path, seed: int = 0) -> list[dict]:
    config = {"augment": "none", "monitor_n": 256, "co_guard": "warn", "holdout_fraction": 0.1, **overrides}
    result = harden(
        load_model(start),
        load_recipe("pgd-at", config),
        data,
        eval_data,
        HardenOptions(
            out_dir=out,
            device="cpu",
            amp="off",
            eval_n=16,
            seed=seed,
            eval_options={"attacks": ["fgsm"], "eps": config.get("eps", 8 / 255)},
        ),
    )
    return result.report.history


def row(name: str, start: str, history: list[dict], seconds: float) -> dict:
    pgd = [h["holdout_robust_accuracy"] for h in history]
    fgsm = [h.get("guard_fgsm_accuracy") for h in history]
    return {
        "run": name,
        "start": start,
        "input_pgd": history[0]["input_holdout_robust_accuracy"],
        "pgd": pgd,
        "fgsm": fgsm,
        "largest_pgd_fall": max((max(pgd[:i]) - pgd[i] for i in range(1, len(pgd))), default=0.0),
        "fired": any(h.get("collapsed") for h in history),
        "fired_at": [h["epoch"] for h in history if h.get("collapsed")],
        "seconds": seconds,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", default="digits", choices=("digits", "digits32", "cifar", "all"))
    parser.add_argument("--seeds", default="0", help="digits32: comma-separated seeds (the clean model and the run)")
    parser.add_argument(
        "--cifar-model", type=Path, default=Path(__file__).parent / "out" / "ft" / "pretrain" / "model.safetensors"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.set in ("digits", "all"):
            for index, (name, start, overrides) in enumerate(DIGITS_RUNS):
                started = time.time()
                history = train(
                    digits_start(start, work),
                    overrides,
                    load_dataset("digits-train"),
                    load_dataset("digits-test"),
                    work / f"digits-{index}",
                )
                rows.append(row(f"digits: {name}", start, history, time.time() - started))
                print(json.dumps(rows[-1]), flush=True)
        if args.set in ("digits32", "all"):
            seeds = [int(seed) for seed in args.seeds.split(",")]
            runs = [(name, arch, overrides, seed) for seed in seeds for name, arch, overrides in DIGITS32_RUNS]
            runs += [(name, arch, overrides, seeds[0]) for name, arch, overrides in DIGITS32_EXTRA]
            for index, (name, arch, overrides, seed) in enumerate(runs):
                start = digits32_start(arch, seed, work)
                config = load_model(start).info.data_config
                started = time.time()
                history = train(
                    start,
                    overrides,
                    load_dataset("digits-train", data_config=config),
                    load_dataset("digits-test", data_config=config),
                    work / f"digits32-{index}",
                    seed=seed,
                )
                rows.append(
                    row(f"digits at 32 px: {name}, seed {seed}", f"clean:{arch}", history, time.time() - started)
                )
                print(json.dumps(rows[-1]), flush=True)
        if args.set in ("cifar", "all"):
            if not (CIFAR / "train.npz").is_file() or not args.cifar_model.is_file():
                print("CIFAR-10 or --cifar-model absent: skipping the cifar set", file=sys.stderr)
            else:
                test = load_dataset(str(CIFAR / "test.npz"))
                for index, (name, n, overrides) in enumerate(CIFAR_RUNS):
                    started = time.time()
                    history = train(
                        args.cifar_model,
                        overrides,
                        load_dataset(str(CIFAR / "train.npz")).head(n),
                        test,
                        work / f"cifar-{index}",
                    )
                    rows.append(row(f"cifar ({n} images): {name}", "clean:resnet10t", history, time.time() - started))
                    print(json.dumps(rows[-1]), flush=True)
    print(
        "\n| run | start | input PGD | PGD per epoch (held-out) | FGSM last | largest PGD fall between epochs "
        "| guard fired |\n|---|---|---|---|---|---|---|"
    )
    for r in rows:
        curve = " ".join(f"{p:.2f}" for p in r["pgd"])
        print(
            f"| {r['run']} | {r['start']} | {r['input_pgd']:.2f} | {curve} | {r['fgsm'][-1]:.2f} | "
            f"{r['largest_pgd_fall']:.2f} | "
            f"{'epoch ' + str(r['fired_at'][0]) if r.get('fired_at') else 'yes' if r['fired'] else 'no'} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
