"""What the CIFAR-10 studies (``study_*.py``) share: their common options, the fairness rules of every arm, and the
clean-pretrained input model they all start from.

Every study fine-tunes or hardens the same checkpoint: a small timm model trained cleanly (``standard``) for
``--pretrain-epochs`` on the first ``--train-n`` CIFAR-10 training images, kept in ``--out`` (default
``benchmarks/out/recipes``) so that each study, and a rerun of one, reuses it instead of training it again. The studies
also share ``--out`` itself: the cost-sensitive study reuses the recipes study's finished ``pgd-at`` arm.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from common import CIFAR, CIFAR_MEAN, CIFAR_STD, ROOT, minutes_log, update_section

from hardenctl import api
from hardenctl.data import ArrayDataset, load_dataset
from hardenctl.models import create_timm_model, save_model, wrap_model


def study_parser(description: str) -> argparse.ArgumentParser:
    """The options every study takes (each study adds its own)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--arch", default="resnet10t")
    parser.add_argument("--train-n", type=int, default=10000)
    parser.add_argument("--eval-n", type=int, default=1000)
    parser.add_argument(
        "--pretrain-epochs", type=int, default=10, help="clean epochs of the input model every arm starts from"
    )
    parser.add_argument(
        "--epochs", type=int, default=4, help="epochs of every arm (recipes and cost-sensitive studies)"
    )
    parser.add_argument(
        "--lr", type=float, default=0.05, help="peak lr of every arm, cosine to 0 (recipes and cost-sensitive studies)"
    )
    parser.add_argument("--apgd-steps", type=int, default=100)
    parser.add_argument("--square-queries", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "recipes")
    parser.add_argument("--no-results-md", action="store_true", help="do not touch benchmarks/RESULTS.md")
    return parser


def common_overrides(args: argparse.Namespace, epochs: int, recipe: str) -> dict:
    """What every arm shares: the fairness rules of RECIPES.md (``standard`` keeps its 0 attack steps)."""
    attack = {} if recipe == "standard" else {"attack_steps": 10, "attack_alpha": 2 / 255}
    profile = (
        {} if recipe == "standard" else {"profile": "paper"}
    )  # the runs in RESULTS.md predate profiles: the paper values
    return {
        **profile,
        "epochs": epochs,
        "batch_size": 128,
        "optimizer": "sgd",
        "lr": args.lr,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "schedule": "cosine",
        "warmup_epochs": 0,
        "augment": "crop-flip",
        "crop_padding": 4,
        "holdout_fraction": 0.05,
        "eps": 8 / 255,
        "monitor_n": 250,
        "monitor_steps": 10,
        **attack,
    }


@dataclass
class Setup:
    """What a study starts from: the data, the clean-pretrained input model and the log."""

    train_data: ArrayDataset  # the first --train-n training images
    test_full: ArrayDataset  # every test image
    input_path: Path  # the clean-pretrained model (not trained when the study said it brings its own)
    log: Callable[[str], None]


def prepare(args: argparse.Namespace, pretrain: bool = True) -> Setup:
    """Load the data and train (or reuse) the clean input model in ``args.out``; ``pretrain=False`` skips the
    training."""
    torch.set_num_threads(args.threads)
    log = minutes_log()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    train_data = load_dataset(str(CIFAR / "train.npz")).head(args.train_n)
    test_full = load_dataset(str(CIFAR / "test.npz"))
    init = out / "init.safetensors"
    if not init.is_file():  # kept across runs so a later run (e.g. one more arm) resumes the same pretraining
        torch.manual_seed(args.seed)
        net = create_timm_model(args.arch, num_classes=10, in_chans=3)
        save_model(wrap_model(net, args.arch, 10, CIFAR_MEAN, CIFAR_STD, input_size=(32, 32), source="bench"), init)
    pretrain_dir = out / "pretrain"
    if not pretrain:
        pass
    elif (pretrain_dir / "model.safetensors").is_file():
        log(f"reusing the clean pretrained model in {pretrain_dir}")
    else:
        log(f"pretraining {args.arch} cleanly for {args.pretrain_epochs} epochs")
        api.harden(
            init,
            train_data,
            recipe="standard",
            out_dir=pretrain_dir,
            overrides={**common_overrides(args, args.pretrain_epochs, "standard"), "lr": 0.1, "select": "last"},
            eval_data=test_full.head(args.eval_n),
            eval_n=100,
            eval_options={"suite": "quick", "eps": 8 / 255},
            seed=args.seed,
            device="cpu",
            channels_last=args.channels_last,
            resume=True,
            log=log,
        )
    return Setup(train_data, test_full, pretrain_dir / "model.safetensors", log)


def eval_kwargs(args: argparse.Namespace, test_data: ArrayDataset) -> dict:
    """``api.harden``'s evaluation of an arm: the standard suite at L∞ 8/255 on the first --eval-n test images."""
    return dict(
        eval_data=test_data,
        eval_n=args.eval_n,
        seed=args.seed,
        device="cpu",
        channels_last=args.channels_last,
        eval_options={
            "suite": "standard",
            "eps": 8 / 255,
            "apgd_steps": args.apgd_steps,
            "square_queries": args.square_queries,
        },
    )


def clean_predictions(model, data: ArrayDataset, batch: int = 500) -> torch.Tensor:
    """Top-1 predictions on every image of ``data`` (forward passes only: cheap, and 10× the samples of the suite)."""
    model.eval()
    with torch.no_grad():
        return torch.cat(
            [model(data.pixels(start, min(start + batch, len(data)))).argmax(1) for start in range(0, len(data), batch)]
        )


def publish(args: argparse.Namespace, heading: str, section: str) -> int:
    """Write the study's section of RESULTS.md (unless --no-results-md) and print it; the exit code of a finished
    study."""
    if not args.no_results_md:
        update_section(heading, section)
    print(section)
    return 0
