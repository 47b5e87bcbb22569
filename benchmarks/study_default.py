"""The default profile against the paper profile at equal budget (issue 21), on CIFAR-10 and on Imagewoof photos.

Every arm starts from the same clean model of ours and spends the same budget (epochs × images × PGD-10 steps); the
arms differ only in ``--profile`` (``finetune``, the default, whose ``lr: auto`` measures its lr, vs ``paper``) and,
for extra arms, a fixed ``--lr``. Two parts, each resumable (an arm with a report is not run again) and meant to run as
two one-thread processes side by side:

- ``cifar``: the input model, data and protocol of ``study_finetune.py``'s CIFAR-10 part (``--out`` holds its
  ``pretrain/``); the standard suite scores every epoch's weights on the first ``--ft-eval-n`` test images.
- ``woof``: ``study_finetune.py``'s clean Imagewoof model (``--out``/woof/pretrain), fine-tuned at each ε of
  ``--woof-eps``; the standard suite at that ε on the first ``--woof-eval-n`` val photos (timm's eval transform).

Prints a Markdown table of the arms (nothing is written to RESULTS.md: the numbers go there by hand, with the reading).

    python benchmarks/study_default.py --part cifar --recipes pgd-at,mart --out /work/ft_out --threads 1
    python benchmarks/study_default.py --part woof --recipes pgd-at --woof-eps 2,4 --out /work/ft_out --threads 1
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from common import IMAGEWOOF as WOOF
from study_finetune import per_epoch_suite, woof_input
from study_setup import prepare, study_parser

from hardenctl import api


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = study_parser(__doc__.split("\n")[0])
    parser.add_argument("--part", choices=("cifar", "woof"), required=True)
    parser.add_argument("--recipes", default="pgd-at", help="recipes of the arms, comma-separated")
    parser.add_argument("--profiles", default="finetune,paper", help="profiles of the arms (finetune is the default)")
    parser.add_argument("--lrs", default="", help="extra finetune arms with these fixed peak lrs")
    parser.add_argument(
        "--tag", default="auto", help="suffix of the finetune arms' directories (a new default, a new directory)"
    )
    parser.add_argument("--ft-epochs", type=int, default=3)
    parser.add_argument("--ft-eval-n", type=int, default=200)
    parser.add_argument("--woof-size", type=int, default=128)
    parser.add_argument("--woof-pretrain-epochs", type=int, default=20)
    parser.add_argument("--woof-epochs", type=int, default=5)
    parser.add_argument("--woof-batch", type=int, default=32)
    parser.add_argument("--woof-eval-n", type=int, default=200)
    parser.add_argument("--woof-eps", default="2,4", help="L-inf radii, in 1/255")
    return parser.parse_args(argv)


def arms(args) -> list[tuple[str, str, dict]]:
    """(directory, recipe, overrides) of every arm of the part."""
    result = []
    seed = f"-seed{args.seed}" if args.seed else ""  # seed 0's directories keep the names of the earlier studies' arms
    for recipe in args.recipes.split(","):
        for profile in args.profiles.split(","):
            result.append(
                (
                    f"{recipe}-{profile}" + (f"-{args.tag}" if profile == "finetune" else "") + seed,
                    recipe,
                    {"profile": profile},
                )
            )
        result += [
            (f"{recipe}-finetune-lr{lr}{seed}", recipe, {"profile": "finetune", "lr": float(lr)})
            for lr in args.lrs.split(",")
            if lr
        ]
    return result


def summary(arm_dir: Path) -> dict:
    report = json.loads((arm_dir / "report.json").read_text())
    return {
        "lr": report["recipe_config"]["lr"],
        "lr_sweep": report.get("lr_sweep"),
        "runtime": report.get("runtime", {}),
        "input": [report["input"]["clean_accuracy"], report["input"]["robust_accuracy"]]
        if report.get("input")
        else None,
        "hardened": [report["hardened"]["clean_accuracy"], report["hardened"]["robust_accuracy"]],
        "saved_epoch": report["selected_epoch"],
        "trade": report.get("trade"),
    }


def run_cifar(args, log) -> list[dict]:
    setup = prepare(args)  # reuses --out/pretrain (the input model of the CIFAR-10 profile studies)
    test_data = setup.test_full.head(args.ft_eval_n)
    rows = []
    for directory, recipe, overrides in arms(args):
        arm_dir = args.out / "finetune" / directory
        if not (arm_dir / "report.json").is_file():
            log(f"hardening: {directory}, {args.ft_epochs} epochs")
            api.harden(
                setup.input_path,
                setup.train_data,
                recipe=recipe,
                out_dir=arm_dir,
                resume=True,
                log=log,
                overrides={
                    "epochs": args.ft_epochs,
                    "holdout_fraction": 0.05,
                    "monitor_n": 250,
                    "eps": 8 / 255,
                    "attack_alpha": 2 / 255,
                    **overrides,
                },
                eval_data=test_data,
                eval_n=args.ft_eval_n,
                eval_options={"suite": "quick", "eps": 8 / 255},
                seed=args.seed,
                device="cpu",
                channels_last=args.channels_last,
            )
        epochs = per_epoch_suite(args, arm_dir, setup.input_path, test_data, 8 / 255, args.ft_eval_n, log)
        rows.append({"arm": directory, **summary(arm_dir), "epochs": epochs})
        log(f"{directory}: " + "; ".join(f"epoch {e['epoch']} {e['clean']:.1%} / {e['robust']:.1%}" for e in epochs))
    return rows


def run_woof(args, log) -> list[dict]:
    torch.set_num_threads(args.threads)
    input_path = woof_input(args, args.out / "woof", log)
    rows = []
    for eps_255 in (float(e) for e in args.woof_eps.split(",")):
        eps = eps_255 / 255
        for directory, recipe, overrides in arms(args):
            arm_dir = args.out / "woof" / f"{directory}-eps{eps_255:g}"
            if not (arm_dir / "report.json").is_file():
                log(f"hardening imagewoof: {arm_dir.name}")
                api.harden(
                    input_path,
                    str(WOOF / "train"),
                    recipe=recipe,
                    out_dir=arm_dir,
                    resume=True,
                    log=log,
                    overrides={
                        "epochs": args.woof_epochs,
                        "batch_size": args.woof_batch,
                        "eps": eps,
                        "attack_alpha": eps / 4,
                        "holdout_fraction": 0.1,
                        "monitor_n": 100,
                        "rrc_scale": [0.35, 1.0],
                        **overrides,
                    },
                    eval_data=str(WOOF / "val"),
                    eval_n=args.woof_eval_n,
                    eval_options={
                        "suite": "standard",
                        "eps": eps,
                        "apgd_steps": args.apgd_steps,
                        "square_queries": args.square_queries,
                    },
                    seed=args.seed,
                    device="cpu",
                    channels_last=args.channels_last,
                )
            rows.append({"arm": arm_dir.name, "eps_255": eps_255, **summary(arm_dir)})
            log(f"{arm_dir.name}: {rows[-1]['input']} → {rows[-1]['hardened']} (lr {rows[-1]['lr']})")
    return rows


def table(rows: list[dict], n: int) -> str:
    lines = [
        "| arm | lr | input clean / robust | hardened clean / robust | per epoch (standard suite) "
        "| sweep s / train s |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        pct = lambda pair: f"{pair[0]:.1%} / {pair[1]:.1%}" if pair else "–"  # noqa: E731
        epochs = "; ".join(f"{e['clean']:.1%} / {e['robust']:.1%}" for e in row.get("epochs", []))
        runtime = row["runtime"]
        cost = f"{runtime.get('lr_sweep_seconds', 0):.0f} / {runtime.get('train_seconds', 0):.0f}"
        lines.append(
            f"| {row['arm']} | {row['lr']:.4g} | {pct(row['input'])} | {pct(row['hardened'])} | {epochs or '–'} | "
            f"{cost} |"
        )
    sweeps = [
        f"- {row['arm']}: {row['lr_sweep']['candidates'] and row['lr_sweep']['candidates']} → "
        f"{row['lr_sweep']['chosen']:.4g}; {row['lr_sweep']['steps']} steps, {row['lr_sweep']['scored_n']} scored; "
        f"{row['lr_sweep']['why']}"
        for row in rows
        if row.get("lr_sweep")
    ]
    return "\n".join(lines + ["", f"n = {n}; clean / robust, %.", "", *sweeps])


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    log = lambda message: print(message, flush=True)  # noqa: E731
    rows = run_cifar(args, log) if args.part == "cifar" else run_woof(args, log)
    (args.out / f"default_{args.part}.json").write_text(json.dumps(rows, indent=2))
    print(table(rows, args.ft_eval_n if args.part == "cifar" else args.woof_eval_n))
    return 0


if __name__ == "__main__":
    sys.exit(main())
