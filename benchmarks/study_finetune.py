"""Profiles (issue 13): harden a pretrained model without wrecking it (``finetune`` profile) vs the papers' schedules.

Two parts, each resumable, chosen by ``--ft-parts``:

- ``cifar``: from the clean-pretrained input model of ``study_recipes.py`` (the same ``--out``), per recipe of
  ``--ft-recipes``: the ``finetune`` profile, the ``paper`` profile from the checkpoint and from random weights
  (``--reinit``), each for ``--ft-epochs``; the standard suite scores every epoch's weights on the first ``--ft-eval-n``
  test images.
- ``woof``: a model trained cleanly on imagewoof at ``--woof-size`` px, then the ``finetune`` profile of ``pgd-at`` with
  PGD-10 or FGSM-RS at each ε of ``--woof-eps``.

Writes the "## Profiles: finetune vs paper (issue 13)" section of benchmarks/RESULTS.md. The two parts may run as two
processes side by side (``--ft-parts cifar`` / ``--ft-parts woof``).

    python benchmarks/study_finetune.py [--ft-parts cifar,woof] [--ft-epochs 4] [--ft-eval-n 200] [--woof-epochs 2] ...
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch
from common import IMAGENET_MEAN, IMAGENET_STD
from common import IMAGEWOOF as WOOF
from study_setup import prepare, publish, study_parser

from hardenctl import __version__, api
from hardenctl.files import atomic_write
from hardenctl.models import create_timm_model, save_model, wrap_model

FINETUNE_HEADING = "## Profiles: finetune vs paper (issue 13)"


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = study_parser(__doc__.split("\n")[0])
    parser.add_argument("--ft-recipes", default="pgd-at,mart", help="recipes of the CIFAR-10 arms")
    parser.add_argument(
        "--ft-epochs",
        type=int,
        default=4,
        help="epochs of every CIFAR-10 arm; each arm runs the same training attack, so equal epochs are "
        "an equal wall-clock budget (the measured seconds are reported); the paper profile's schedule is "
        "compressed to these epochs (its milestones are fractions)",
    )
    parser.add_argument(
        "--ft-only", default="", help="run only these arms (directory names, comma-separated; default all)"
    )
    parser.add_argument(
        "--ft-lrs", default="", help="extra finetune arms with these peak lrs (the profile's own is lr: auto)"
    )
    parser.add_argument("--ft-eval-n", type=int, default=200, help="test images of the per-epoch standard suite")
    parser.add_argument("--ft-parts", default="cifar,woof", help="cifar (profiles on CIFAR-10), woof (imagewoof)")
    parser.add_argument("--woof-size", type=int, default=128, help="imagewoof input size in pixels")
    parser.add_argument("--woof-pretrain-epochs", type=int, default=8, help="clean epochs of the imagewoof input model")
    parser.add_argument("--woof-epochs", type=int, default=2, help="epochs of every imagewoof arm")
    parser.add_argument("--woof-eval-n", type=int, default=100, help="imagewoof val images evaluated")
    parser.add_argument("--woof-eps", default="2,4", help="imagewoof L-inf radii, in 1/255")
    parser.add_argument("--woof-attacks", default="pgd,fgsm-rs", help="imagewoof training attacks (pgd: PGD-10)")
    return parser.parse_args(argv)


def ft_arms(args) -> list[tuple[str, str, str, dict]]:
    """(name, directory, recipe, overrides) of the CIFAR-10 arms: per recipe, finetune, paper from random init,
    paper from the checkpoint."""
    arms = []
    for recipe in args.ft_recipes.split(","):
        common = {
            "epochs": args.ft_epochs,
            "holdout_fraction": 0.05,
            "monitor_n": 250,
            "eps": 8 / 255,
            "attack_alpha": 2 / 255,
        }
        arms += [
            (f"{recipe} finetune", f"{recipe}-finetune", recipe, {**common, "profile": "finetune"}),
            (
                f"{recipe} paper --reinit",
                f"{recipe}-paper-reinit",
                recipe,
                {**common, "profile": "paper", "reinit": True},
            ),
            (f"{recipe} paper from the checkpoint", f"{recipe}-paper", recipe, {**common, "profile": "paper"}),
        ]
        arms += [
            (
                f"{recipe} finetune, lr {lr:g}",
                f"{recipe}-finetune-lr{lr:g}",
                recipe,
                {**common, "profile": "finetune", "lr": lr},
            )
            for lr in (float(v) for v in args.ft_lrs.split(",") if v)
        ]
    return arms


def epoch_model(input_path: Path, checkpoint: Path):
    """The model of a finished epoch as it would ship (the EMA weights when the run kept them)."""
    from hardenctl.training import read_checkpoint_state

    model = api.load_model(input_path)
    state = read_checkpoint_state(checkpoint)
    model.load_state_dict(state["ema"] if "ema" in state else state["model"])
    return model.eval()


def per_epoch_suite(args, arm_dir: Path, input_path: Path, test_data, eps: float, n: int, log) -> list[dict]:
    """Clean and standard-suite robust accuracy of every epoch's weights (cached in arm_dir/epoch_eval)."""
    from hardenctl.training import checkpoint_path

    rows = []
    # the hardened model is the skeleton every epoch's weights load into: it has the layers a recipe inserted (FSR)
    skeleton = arm_dir / "model.safetensors" if (arm_dir / "model.safetensors").is_file() else input_path
    history = [json.loads(line) for line in (arm_dir / "train_log.jsonl").read_text().splitlines()]
    for record in history:
        cache = arm_dir / "epoch_eval" / f"epoch_{record['epoch']:04d}.json"
        if not cache.is_file():
            log(f"  {arm_dir.name}: standard suite on epoch {record['epoch']}")
            report = api.evaluate(
                epoch_model(skeleton, checkpoint_path(arm_dir, record["epoch"])),
                test_data.head(n),
                suite="standard",
                eps=eps,
                n=n,
                seed=args.seed,
                apgd_steps=args.apgd_steps,
                square_queries=args.square_queries,
            )
            cache.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(cache, json.dumps({"clean": report.clean_accuracy, "robust": report.robust_accuracy}))
        rows.append(
            {
                "epoch": record["epoch"],
                **json.loads(cache.read_text()),
                "train_seconds": record["train_seconds"],
                "holdout_clean": record["holdout_clean_accuracy"],
                "holdout_robust": record["holdout_robust_accuracy"],
                "lr": record["lr"],
            }
        )
    return rows


def finetune_study(args, out: Path, input_path: Path, train_data, test_full, log) -> str:
    """Both parts of the issue-13 study (each resumable), then the RESULTS.md section."""
    parts = set(args.ft_parts.split(","))
    results_path = out / "finetune" / "results.json"

    def saved() -> (
        dict
    ):  # re-read before each write: the two parts may run as two processes (--ft-parts cifar / woof) side by side
        return json.loads(results_path.read_text()) if results_path.is_file() else {}

    if "cifar" in parts:
        cifar = finetune_cifar(args, out / "finetune", input_path, train_data, test_full, log)
        atomic_write(results_path, json.dumps({**saved(), "cifar": cifar}, indent=2))
    if "woof" in parts:
        woof = finetune_woof(args, out / "finetune" / "woof", log)
        atomic_write(results_path, json.dumps({**saved(), "woof": woof}, indent=2))
    return finetune_markdown(args, saved())


def finetune_cifar(args, out: Path, input_path: Path, train_data, test_full, log) -> dict:
    test_data = test_full.head(args.ft_eval_n)
    cache = out / "input_eval.json"
    if not cache.is_file():
        log(f"evaluating the input model (standard suite, {args.ft_eval_n} test images)")
        report = api.evaluate(
            api.load_model(input_path),
            test_data,
            suite="standard",
            eps=8 / 255,
            n=args.ft_eval_n,
            seed=args.seed,
            apgd_steps=args.apgd_steps,
            square_queries=args.square_queries,
        )
        atomic_write(cache, json.dumps({"clean": report.clean_accuracy, "robust": report.robust_accuracy}))
    arms = []
    only = {d for d in args.ft_only.split(",") if d}
    for name, directory, recipe, overrides in ft_arms(args):
        if only and directory not in only:
            continue
        arm_dir = out / directory
        if not (arm_dir / "report.json").is_file():
            log(f"hardening: {name}, {args.ft_epochs} epochs")
            api.harden(
                input_path,
                train_data,
                recipe=recipe,
                out_dir=arm_dir,
                overrides=overrides,
                resume=True,
                log=log,
                eval_data=test_data,
                eval_n=args.ft_eval_n,
                eval_options={"suite": "quick", "eps": 8 / 255},
                seed=args.seed,
                device="cpu",
                channels_last=args.channels_last,
            )
        report = json.loads((arm_dir / "report.json").read_text())
        epochs = per_epoch_suite(args, arm_dir, input_path, test_data, 8 / 255, args.ft_eval_n, log)
        arms.append(
            {
                "arm": name,
                "recipe": recipe,
                "profile": report["profile"],
                "reinit": report["recipe_config"]["reinit"],
                "decisions": report.get("decisions", []),
                "lr": report["recipe_config"]["lr"],
                "optimizer": report["recipe_config"]["optimizer"],
                "epochs": epochs,
                "input_holdout": [
                    report["history"][0]["input_holdout_clean_accuracy"],
                    report["history"][0]["input_holdout_robust_accuracy"],
                ],
                "saved_epoch": report["selected_epoch"],
            }
        )
        log(
            f"{name}: "
            + "; ".join(f"epoch {e['epoch']} clean {e['clean']:.1%} robust {e['robust']:.1%}" for e in epochs)
        )
    return {"input": json.loads(cache.read_text()), "arms": arms, "train_n": len(train_data), "eval_n": args.ft_eval_n}


def woof_input(args, out: Path, log) -> Path:
    """A resnet10t trained cleanly on the imagewoof training folder at --woof-size px: the pretrained model a user
    brings."""
    size = (args.woof_size, args.woof_size)
    init = out / "init.safetensors"
    if not init.is_file():
        torch.manual_seed(args.seed)
        net = create_timm_model(args.arch, num_classes=10, in_chans=3)
        save_model(wrap_model(net, args.arch, 10, IMAGENET_MEAN, IMAGENET_STD, input_size=size, source="bench"), init)
    pretrain = out / "pretrain"
    if not (pretrain / "model.safetensors").is_file():
        log(f"imagewoof: clean training of {args.arch} at {args.woof_size} px for {args.woof_pretrain_epochs} epochs")
        api.harden(
            init,
            str(WOOF / "train"),
            recipe="standard",
            out_dir=pretrain,
            resume=True,
            log=log,
            overrides={
                "epochs": args.woof_pretrain_epochs,
                "batch_size": 64,
                "lr": 0.05,
                "schedule": "cosine",
                "warmup_epochs": 1,
                "holdout_fraction": 0.1,
                "monitor_n": 100,
                "select": "last",
                "rrc_scale": [0.35, 1.0],
            },
            eval_data=str(WOOF / "val"),
            eval_n=50,
            eval_options={"suite": "quick", "eps": 2 / 255},
            seed=args.seed,
            device="cpu",
            channels_last=args.channels_last,
        )
    return pretrain / "model.safetensors"


def finetune_woof(args, out: Path, log) -> dict:
    input_path = woof_input(args, out, log)
    arms = []
    input_reports: dict[float, object] = {}
    for eps_255 in (float(e) for e in args.woof_eps.split(",")):
        eps = eps_255 / 255
        for attack in args.woof_attacks.split(","):
            name = f"pgd-at finetune, {'PGD-10' if attack == 'pgd' else 'FGSM-RS'}, {eps_255:g}/255"
            arm_dir = out / f"pgd-at-{attack}-eps{eps_255:g}"
            if not (arm_dir / "report.json").is_file():
                log(f"hardening imagewoof: {name}")
                result = api.harden(
                    input_path,
                    str(WOOF / "train"),
                    recipe="pgd-at",
                    out_dir=arm_dir,
                    resume=True,
                    log=log,
                    overrides={
                        "profile": "finetune",
                        "epochs": args.woof_epochs,
                        "batch_size": 64,
                        "eps": eps,
                        "attack_alpha": eps / 4,
                        "attack": attack,
                        "holdout_fraction": 0.1,
                        "monitor_n": 100,
                        "rrc_scale": [0.35, 1.0],
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
                    input_report=input_reports.get(eps),
                )
                input_reports[eps] = result.report.input
            report = json.loads((arm_dir / "report.json").read_text())
            arms.append(
                {
                    "arm": name,
                    "eps_255": eps_255,
                    "attack": attack,
                    "input": [report["input"]["clean_accuracy"], report["input"]["robust_accuracy"]],
                    "hardened": [report["hardened"]["clean_accuracy"], report["hardened"]["robust_accuracy"]],
                    "history": [
                        {
                            k: h.get(k)
                            for k in (
                                "epoch",
                                "holdout_clean_accuracy",
                                "holdout_robust_accuracy",
                                "guard_fgsm_accuracy",
                                "collapsed",
                                "train_seconds",
                                "lr",
                            )
                        }
                        for h in report["history"]
                    ],
                    "input_holdout": [
                        report["history"][0]["input_holdout_clean_accuracy"],
                        report["history"][0]["input_holdout_robust_accuracy"],
                    ],
                    "collapses": report.get("collapses", []),
                    "lr": report["recipe_config"]["lr"],
                    "saved_epoch": report["selected_epoch"],
                }
            )
            log(
                f"{name}: clean {arms[-1]['input'][0]:.1%} → {arms[-1]['hardened'][0]:.1%}, robust "
                f"{arms[-1]['input'][1]:.1%} → {arms[-1]['hardened'][1]:.1%}"
            )
    return {
        "arms": arms,
        "size": args.woof_size,
        "eval_n": args.woof_eval_n,
        "pretrain_epochs": args.woof_pretrain_epochs,
        "epochs": args.woof_epochs,
    }


def finetune_markdown(args, results: dict) -> str:
    lines = [
        FINETUNE_HEADING,
        "",
        f"Command: `python benchmarks/study_finetune.py ...` (hardenctl {__version__}, torch {torch.__version__}, "
        f"{args.threads} CPU threads).",
        "",
    ]
    cifar = results.get("cifar")
    if cifar:
        arm = cifar["arms"][0] if cifar["arms"] else None
        lines += [
            f"**CIFAR-10.** Input: `{args.arch}` trained cleanly (clean {cifar['input']['clean']:.1%}, robust "
            f"{cifar['input']['robust']:.1%} on the first {cifar['eval_n']} test images). Every arm: {args.ft_epochs} "
            f"epochs on {cifar['train_n']} training images (5% held out), PGD-10 at L∞ 8/255 (the recipe's own start "
            "and step), batch 128, seed "
            + str(args.seed)
            + "; the same attack and epochs, so the same wall-clock budget (train seconds below). "
            "`finetune`: the profile's defaults compressed to these epochs (lr "
            + (f"{arm['lr']:g}" if arm else "auto")
            + " SGD, half-epoch warm-up, cosine, ε warm-up over 20% of the steps). `paper`: the published schedule "
            "compressed to these epochs (lr 0.1 from step one, its milestones as fractions), from the checkpoint or "
            "from random weights (`--reinit`). Per epoch: clean and standard-suite robust accuracy (APGD-CE → APGD-T → "
            f"Square-{args.square_queries}, APGD {args.apgd_steps} steps) of that epoch's weights on the first "
            f"{cifar['eval_n']} test images.",
            "",
            "| arm | "
            + " | ".join(f"epoch {e}" for e in range(1, args.ft_epochs + 1))
            + " | train s / epoch | best epoch: robust points gained per epoch of budget | clean points paid there |",
            "|---" * (args.ft_epochs + 4) + "|",
            f"| input | {cifar['input']['clean']:.1%} / {cifar['input']['robust']:.1%} |" + " |" * (args.ft_epochs + 2),
        ]
        for arm in cifar["arms"]:
            cells = [f"{e['clean']:.1%} / {e['robust']:.1%}" for e in arm["epochs"]]
            cells += [""] * (args.ft_epochs - len(cells))
            seconds = statistics.mean(e["train_seconds"] for e in arm["epochs"]) if arm["epochs"] else float("nan")
            # the user's question: robustness per hour of training, and the clean accuracy it costs (at the arm's
            # best epoch). Every epoch of every arm is the same work (PGD-10 on the same images), so the budget is
            # counted in epochs: the measured seconds depend on what else the machine ran at the time, not on the arm.
            best = max(range(len(arm["epochs"])), key=lambda i: arm["epochs"][i]["robust"]) if arm["epochs"] else None
            if best is None:
                rate = paid = ""
            else:
                gain = arm["epochs"][best]["robust"] - cifar["input"]["robust"]
                rate = f"{100 * gain / (best + 1):.1f} (epoch {best + 1})"
                paid = f"{100 * (cifar['input']['clean'] - arm['epochs'][best]['clean']):.0f}"
            lines.append(f"| {arm['arm']} | " + " | ".join(cells) + f" | {seconds:.0f} | {rate} | {paid} |")
        lines += [
            "",
            "Cells: clean / robust (standard suite, worst case). Train seconds vary with the load other jobs put on "
            "the machine at the time (the arms ran at different times, beside up to three other jobs on 2 cores), not "
            "with the arm: every epoch is the same PGD-10 work, so the gain is per epoch of that budget.",
        ]
        se = (0.25 / cifar["eval_n"]) ** 0.5
        lines += [f"Noise: binomial standard error ≤ {se:.1%} at n = {cifar['eval_n']}; one seed.", ""]
    woof = results.get("woof")
    if woof:
        lines += [
            f"**Imagewoof at {woof['size']} px.** Input: `{args.arch}` trained cleanly on the 1,000-image imagewoof "
            f"training folder for {woof['pretrain_epochs']} epochs (timm RandomResizedCrop 0.35–1 + flip). Every arm: "
            f"the `finetune` profile of `pgd-at` for {woof['epochs']} epochs (batch 64), training attack PGD-10 (step "
            "ε/4) or FGSM-RS (`attack: fgsm-rs`, one step of 1.25ε from a uniform start) at the ε of the row. "
            f"Evaluation: the first {woof['eval_n']} val images, standard suite at the same ε.",
            "",
            "| arm | input clean / robust | hardened clean / robust | held-out per epoch (clean / PGD-10, FGSM) | "
            "collapses | train s / epoch |",
            "|---|---|---|---|---|---|",
        ]
        for arm in woof["arms"]:
            per_epoch = "; ".join(
                f"{h['holdout_clean_accuracy']:.0%} / {h['holdout_robust_accuracy']:.0%}"
                + (f", {h['guard_fgsm_accuracy']:.0%}" if h.get("guard_fgsm_accuracy") is not None else "")
                for h in arm["history"]
            )
            seconds = statistics.mean(h["train_seconds"] for h in arm["history"])
            lines.append(
                f"| {arm['arm']} | {arm['input'][0]:.1%} / {arm['input'][1]:.1%} | {arm['hardened'][0]:.1%} / "
                f"{arm['hardened'][1]:.1%} | {per_epoch} | {len(arm['collapses'])} | {seconds:.0f} |"
            )
        se = (0.25 / woof["eval_n"]) ** 0.5
        lines += ["", f"Noise: binomial standard error ≤ {se:.1%} at n = {woof['eval_n']}; one seed.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    setup = prepare(args, pretrain="cifar" in args.ft_parts.split(","))  # the imagewoof part brings its own input model
    return publish(
        args,
        FINETUNE_HEADING,
        finetune_study(args, args.out, setup.input_path, setup.train_data, setup.test_full, setup.log),
    )


if __name__ == "__main__":
    sys.exit(main())
