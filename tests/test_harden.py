"""The training engine and `hardenctl harden`: modes, schedules, augmentation, outputs, resume, DDP, errors."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import timm
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from testing_helpers import ddp_harden_args, torchrun

from hardenctl import __version__
from hardenctl.data import load_dataset
from hardenctl.demo import DEMO_ARCH, DIGITS_MEAN, DIGITS_STD
from hardenctl.models import create_timm_model, load_model, save_model, wrap_model
from hardenctl.recipes import load_recipe
from hardenctl.training import (
    DataSplit,
    Distributed,
    HardenOptions,
    TrainingPGD,
    augment,
    learning_rate,
    read_checkpoint_state,
    step_seed,
    train,
    training_step,
)
from hardenctl.training.lr_sweep import chosen_lr

# Digits are 8×8 with 17 grey levels: ε = 0.1 (1.6 levels) is a real threat, 8/255 is not.
MART_ARGS = [
    "--recipe",
    "mart",
    "--data",
    "digits-train",
    "--epochs",
    "3",
    "--batch-size",
    "128",
    "--lr",
    "0.02",
    "--set",
    "eps=0.1",
    "--set",
    "attack_alpha=0.025",
    "--set",
    "attack_steps=5",
    "--set",
    "augment=none",
    "--set",
    "milestones=[0.67]",
    "--set",
    "monitor_n=128",
    "--seed",
    "0",
    "--device",
    "cpu",
]
REPORT_ARGS = ["--eval-data", "digits-test", "--suite", "quick", "--eps", "0.1"]


def digits_model(arch: str = DEMO_ARCH):
    torch.manual_seed(0)
    net = create_timm_model(arch, num_classes=10, in_chans=1)
    return wrap_model(net, arch, 10, DIGITS_MEAN, DIGITS_STD, in_chans=1, input_size=(8, 8))


# ---------------------------------------------------------------------------------------------
# the step: attack in eval mode, loss in train mode
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, attack_passes, loss_passes", [("mart", 3, 2), ("trades", 4, 2), ("pgd-at", 3, 1)])
def test_attack_runs_in_eval_mode_and_the_loss_in_train_mode(name, attack_passes, loss_passes):
    recipe = load_recipe(name, {"attack_steps": 3})
    model = digits_model().train()
    modes = []
    model.register_forward_pre_hook(lambda module, args: modes.append(module.training))
    attack = TrainingPGD.for_recipe(recipe)
    data = load_dataset("digits-train").head(32)
    x, y = data.pixels(0, 32), data.y
    running_mean = model.model.bn1.running_mean.clone()
    loss = training_step(model, model, recipe, attack, x, y, contextlib.nullcontext)
    assert (
        modes == [False] * attack_passes + [True] * loss_passes
    )  # TRADES' extra eval pass: the clean target of its KL
    assert model.training and loss.requires_grad
    assert not torch.equal(model.model.bn1.running_mean, running_mean)  # only the train-mode loss passes update BN


def test_training_attack_returns_the_last_iterate_inside_the_ball():
    recipe = load_recipe("pgd-at", {"attack_steps": 4, "eps": 0.1, "attack_alpha": 0.03})
    model = digits_model().eval()
    data = load_dataset("digits-train").head(16)
    x, y = data.pixels(0, 16), data.y
    attack = TrainingPGD.for_recipe(recipe)
    attack.generator = torch.Generator().manual_seed(0)
    x_adv = attack(model, x, y)
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    # the same draws by hand: uniform start, 4 sign steps, no early stop on a fooled iterate
    g = torch.Generator().manual_seed(0)
    manual = (x + 0.1 * (2 * torch.rand(x.shape, generator=g) - 1)).clamp(0, 1)
    for _ in range(4):
        manual.requires_grad_(True)
        (grad,) = torch.autograd.grad(torch.nn.functional.cross_entropy(model(manual), y, reduction="sum"), manual)
        manual = torch.min(torch.max(manual.detach() + 0.03 * grad.sign(), x - 0.1), x + 0.1).clamp(0, 1)
    torch.testing.assert_close(x_adv, manual)


def test_attack_start_and_augmentation_do_not_depend_on_the_number_of_processes():
    recipe = load_recipe("mart", {"augment": "crop-flip", "crop_padding": 2})
    x = torch.rand(8, 1, 8, 8)
    whole_start = TrainingPGD.for_recipe(recipe)
    whole_start.generator = torch.Generator().manual_seed(5)
    whole = (augment(x, recipe.config, torch.Generator().manual_seed(7)), whole_start.start_point(x))
    for rank in range(2):
        share = TrainingPGD.for_recipe(recipe, rank, 2)
        share.generator = torch.Generator().manual_seed(5)
        part = (
            augment(x[rank::2], recipe.config, torch.Generator().manual_seed(7), rank, 2),
            share.start_point(x[rank::2]),
        )
        torch.testing.assert_close(part[0], whole[0][rank::2])
        torch.testing.assert_close(part[1], whole[1][rank::2])


def test_augmentation_is_a_padded_crop_and_a_flip():
    x = torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).view(2, 3, 5, 5) + 1
    config = load_recipe("pgd-at", {"augment": "crop", "crop_padding": 2}).config
    out = augment(x, config, torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):
        assert any(torch.equal(out[i], padded[i, :, r : r + 5, c : c + 5]) for r in range(5) for c in range(5))
    flips = augment(x, load_recipe("pgd-at", {"augment": "flip"}).config, torch.Generator().manual_seed(1))
    assert all(torch.equal(flips[i], x[i]) or torch.equal(flips[i], x[i].flip(2)) for i in range(2))
    assert torch.equal(augment(x, load_recipe("pgd-at", {"augment": "none"}).config, torch.Generator()), x)


def test_learning_rate_schedules():
    def lr(schedule, epoch, step=0, **extra):
        config = load_recipe(
            "pgd-at", {"profile": "paper", "schedule": schedule, "epochs": 10, "lr": 1.0, **extra}
        ).config
        return learning_rate(config, epoch, step, 4)

    assert [lr("step", e, milestones=[0.5, 0.8]) for e in (0, 4, 5, 7, 8, 9)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.01]
    )
    assert lr("cosine", 0) == 1.0 and lr("cosine", 5) == pytest.approx(0.5) and lr("cosine", 9, 3) < 0.01
    assert lr("onecycle", 1, warmup_epochs=2) == pytest.approx(0.5) and lr(
        "onecycle", 2, warmup_epochs=2
    ) == pytest.approx(1.0)
    assert lr("onecycle", 6, warmup_epochs=2) == pytest.approx(0.5) and lr("constant", 9) == 1.0
    assert lr("step", 0, 2, warmup_epochs=1) == pytest.approx(0.5)
    # blake2b-64 of "(1, 2, 3)", little-endian, top bit cleared: pinned from coreutils' `b2sum -l 64`, so a seed
    # that changed between platforms or runs (Python's hash()) fails here
    assert step_seed(1, 2, 3) == 5809300636878265108 and step_seed(1, 2, 4) == 731466289729596913


class CoinFlip(torch.nn.Module):
    """Two random logits at every pass, whatever the input: right with probability 1/2 per draw."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * torch.randn(x.shape[0], 2) + 0 * x.flatten(1).sum(1, keepdim=True)


def test_the_monitor_scores_a_randomised_model_with_eot():
    """draws > 1: clean = mean over draws (≈ 1/2), robust only if right on every draw, before and after PGD
    (≈ (1/2)^8)."""
    from hardenctl.data import ArrayDataset
    from hardenctl.training import clean_and_pgd_accuracy

    data = ArrayDataset(torch.zeros(400, 1, 8, 8, dtype=torch.uint8), torch.arange(400) % 2, ["a", "b"], "coins")
    config = load_recipe("pgd-at", {"eps": 0.1, "monitor_steps": 2}).config
    clean_1, robust_1 = clean_and_pgd_accuracy(CoinFlip(), data, config, 0, Distributed(), 100, draws=1)
    clean_4, robust_4 = clean_and_pgd_accuracy(CoinFlip(), data, config, 0, Distributed(), 100, draws=4)
    assert abs(clean_1 - 0.5) < 0.1 and abs(clean_4 - 0.5) < 0.06  # 400 and 1,600 coin flips
    assert 0.15 < robust_1 < 0.35  # one draw before and one after the attack: ≈ 1/4, a lucky draw counts
    assert robust_4 < 0.02  # eight draws must all be right: ≈ 1/256


def test_select_best_picks_only_among_the_given_epochs():
    from hardenctl.training import select_best

    history = [
        {"epoch": e, "holdout_robust_accuracy": r, "holdout_clean_accuracy": 0.5}
        for e, r in ((1, 0.9), (2, 0.2), (3, 0.4), (4, 0.3))
    ]
    assert select_best(history) == 1
    assert select_best(history, "robust", range(2, 5)) == 3 and select_best(history, "robust", [4]) == 4
    assert select_best(history, "robust", []) == 4  # none of them scored: the last epoch


def test_adamw_onecycle_clipping_and_channels_last_train(tmp_path):
    """The engine's other options run together (mixed precision is CUDA only: not testable here)."""
    recipe = load_recipe(
        "trades",
        {
            "optimizer": "adamw",
            "lr": 1e-3,
            "schedule": "onecycle",
            "warmup_epochs": 0.5,
            "grad_clip": 1.0,
            "attack_steps": 2,
            "batch_size": 64,
            "epochs": 1,
            "monitor_n": 16,
            "augment": "crop",
            "crop_padding": 1,
        },
    )
    data = load_dataset("digits-train").head(128)
    model = digits_model().to(memory_format=torch.channels_last)
    options = HardenOptions(out_dir=tmp_path, device="cpu", amp="off", channels_last=True)
    result = train(model, recipe, DataSplit(data, data.head(16)), options, Distributed(), {})
    assert result.history[0]["loss"] > 0 and result.best_epoch == 1
    assert (tmp_path / "checkpoints" / "epoch_0001.pt").exists() and (tmp_path / "train_log.jsonl").exists()


# ---------------------------------------------------------------------------------------------
# end to end on digits
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mart_run(digits_model_path, tmp_path_factory):
    """`hardenctl harden --recipe mart` on digits-train, reported on digits-test (runs once for this module)."""
    from hardenctl.cli import main

    out = tmp_path_factory.mktemp("mart") / "run"
    assert (
        main(
            [
                "harden",
                str(digits_model_path),
                *MART_ARGS,
                *REPORT_ARGS,
                "--eval-n",
                "200",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    return out


def test_mart_raises_robust_accuracy_on_held_out_digits(mart_run):
    report = json.loads((mart_run / "report.json").read_text())
    before, after = report["input"], report["hardened"]
    assert after["attacks"]["pgd"] >= before["attacks"]["pgd"] + 0.25, (before["attacks"], after["attacks"])
    assert after["robust_accuracy"] >= before["robust_accuracy"] + 0.25
    assert after["clean_accuracy"] >= 0.85
    # the same attacks, seed and samples on both sides
    for key in ("n", "seed", "eps", "suite", "data_sha256", "attack_list"):
        assert before[key] == after[key], key
    assert before["n"] == 200 and before["data"]["source"] == "digits-test"


def test_outputs_are_complete(mart_run, digits_model_path):
    names = sorted(p.name for p in mart_run.iterdir())
    assert names == [
        "README.md",
        "checkpoints",
        "config.json",
        "model.safetensors",
        "recipe.yaml",
        "report.json",
        "report.md",
        "train_log.jsonl",
    ]
    assert sorted(p.name for p in (mart_run / "checkpoints").iterdir()) == [
        "epoch_0001.pt",
        "epoch_0002.pt",
        "epoch_0003.pt",
    ]
    log = [json.loads(line) for line in (mart_run / "train_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3]
    for record in log:
        for key in (
            "loss",
            "lr",
            "train_clean_accuracy",
            "train_robust_accuracy",
            "holdout_clean_accuracy",
            "holdout_robust_accuracy",
            "seconds",
        ):
            assert isinstance(record[key], float), key
    report = json.loads((mart_run / "report.json").read_text())
    assert report["selected"] == "best" and report["selected_epoch"] == report["best_epoch"]
    best = max(log, key=lambda r: (r["holdout_robust_accuracy"], r["holdout_clean_accuracy"], r["epoch"]))
    assert report["best_epoch"] == best["epoch"] and report["last_epoch"] == 3
    assert (report["other"] is None) == (report["best_epoch"] == 3)
    assert report["history"] == log
    markdown = (mart_run / "report.md").read_text()
    trade = report["trade"]  # the first lines: what the run bought and cost, from the very numbers of the report
    assert trade["robust"]["change_points"] == pytest.approx(
        100 * (report["hardened"]["robust_accuracy"] - report["input"]["robust_accuracy"])
    )
    assert trade["clean"]["after_interval"] == report["hardened"]["intervals"]["clean_accuracy"]
    assert trade["under_trained"] in (True, False) and trade["evidence"]
    first_lines = markdown.split("## Before and after")[0]
    assert f"→ {report['hardened']['robust_accuracy']:.1%} [" in first_lines and ("Trade: " in first_lines)
    assert ("Looks under-trained" in first_lines) == trade["under_trained"]
    assert "## Before and after" in markdown and "## Training curves" in markdown and "**saved**" in markdown
    resolved = load_recipe(str(mart_run / "recipe.yaml"))
    assert resolved.name == "mart" and resolved.config.to_dict() == report["recipe_config"]
    assert resolved.config.epochs == 3 and resolved.config.eps == 0.1 and resolved.config.lr == 0.02

    with safe_open(str(mart_run / "model.safetensors"), framework="pt") as fh:
        meta = fh.metadata()
    extra = json.loads(meta["hardenctl"])
    assert (
        meta["arch"] == DEMO_ARCH and json.loads(meta["num_classes"]) == 10 and meta["hardenctl_version"] == __version__
    )
    assert json.loads(meta["mean"]) == list(DIGITS_MEAN) and json.loads(meta["std"]) == list(DIGITS_STD)
    assert extra["recipe"] == "mart" and extra["recipe_config"] == report["recipe_config"]
    assert extra["epoch"] == report["selected_epoch"] and extra["selected"] == "best"
    from hardenctl.files import sha256_file

    assert extra["input_checkpoint_sha256"] == sha256_file(digits_model_path) == report["input_checkpoint"]["sha256"]
    assert report["hardened"]["model_sha256"] == sha256_file(mart_run / "model.safetensors")
    assert not list(mart_run.rglob("*.tmp"))


def test_the_hardened_folder_carries_a_model_card_the_hub_reads(mart_run):
    from huggingface_hub import ModelCard

    card = ModelCard.load(mart_run / "README.md")
    report = json.loads((mart_run / "report.json").read_text())
    assert card.data.library_name == "timm" and "mart" in card.data.tags
    robust = next(r for r in card.data.eval_results if r.metric_name.startswith("robust accuracy"))
    assert robust.metric_value == report["hardened"]["robust_accuracy"] and robust.metric_args["n"] == 200
    assert robust.dataset_name == "digits-test"
    clean = next(r for r in card.data.eval_results if r.metric_name == "clean accuracy")
    assert clean.metric_value == report["hardened"]["clean_accuracy"]


def test_hardened_model_loads_in_eval_and_in_plain_timm(mart_run, cli):
    path = mart_run / "model.safetensors"
    ours = load_model(path)
    plain = timm.create_model(DEMO_ARCH, num_classes=10, in_chans=1, checkpoint_path=str(path)).eval()
    x = load_dataset("digits-test").pixels(0, 64)
    with torch.no_grad():
        assert torch.equal(ours(x), plain((x - DIGITS_MEAN[0]) / DIGITS_STD[0]))
    code, stdout, _ = cli(
        "eval", path, "--data", "digits-test", "--n", "40", "--attacks", "fgsm", "--eps", "0.1", "--json"
    )
    assert code == 0 and json.loads(stdout)["n"] == 40


def test_resume_after_a_kill_gives_the_same_weights(mart_run, digits_model_path, tmp_path):
    """Kill a run (SIGKILL) once its first epoch checkpoint exists, resume it, compare with the uninterrupted run."""
    out = tmp_path / "killed"
    command = [
        sys.executable,
        "-m",
        "hardenctl",
        "harden",
        str(digits_model_path),
        *MART_ARGS,
        *REPORT_ARGS,
        "--eval-n",
        "20",
        "--out",
        str(out),
        "--quiet",
    ]
    # bit-identical CPU results need the same number of threads as the in-process reference run
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 240
    while not (out / "checkpoints" / "epoch_0001.pt").exists():
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "checkpoints" / "epoch_0003.pt").exists() and not (out / "model.safetensors").exists()

    refused = subprocess.run(command, capture_output=True, text=True, env=env)
    assert refused.returncode == 2 and "--resume" in refused.stderr  # a second run into the same --out must say so
    resumed = subprocess.run(command + ["--resume"], capture_output=True, text=True, env=env)
    assert resumed.returncode == 0, resumed.stderr
    for epoch in (1, 2, 3):
        name = f"checkpoints/epoch_{epoch:04d}.pt"
        got, want = read_checkpoint_state(out / name), read_checkpoint_state(mart_run / name)
        assert got["model"].keys() == want["model"].keys()
        for key in want["model"]:
            assert torch.equal(got["model"][key], want["model"][key]), (epoch, key)
        assert [h["loss"] for h in got["history"]] == [h["loss"] for h in want["history"]]
    got, want = load_file(out / "model.safetensors"), load_file(mart_run / "model.safetensors")
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)


def test_resume_with_other_settings_names_them(mart_run, digits_model_path, cli):
    before = sorted(p.name for p in mart_run.rglob("*"))
    code, _, err = cli("harden", digits_model_path, *MART_ARGS, "--set", "beta=2", "--out", mart_run, "--resume")
    assert code == 2 and "config.beta" in err and "Traceback" not in err
    assert sorted(p.name for p in mart_run.rglob("*")) == before


# ---------------------------------------------------------------------------------------------
# DDP: torchrun, 2 gloo processes on CPU
# ---------------------------------------------------------------------------------------------
def test_ddp_matches_one_process_and_only_rank_0_writes(tmp_path, cli):
    """Same global batch and seed: the first epoch's loss matches a single-process run; rank 1 writes nothing.

    A GroupNorm model, so that per-process batch statistics cannot differ from the global ones. A small lr keeps the
    trajectory stable, so the comparison tests the DDP arithmetic rather than float chaos: at lr 0.05 the all-reduce's
    other summation order grew to 9.7e-6 relative over the epoch's 10 steps on one machine (1.4e-8 on another), at
    lr 1e-4 it is 1.8e-8, while giving rank 1 rank 0's share of the crops is 2e-2.
    """
    checkpoint = save_model(digits_model("test_efficientnet_gn"), tmp_path / "gn.safetensors")
    args = [str(checkpoint), *ddp_harden_args(epochs=1)]
    ddp = torchrun(
        f"""
        import os, sys
        from hardenctl.cli import main
        # every process gets its own --out, so a file written by rank 1 would show
        sys.exit(main(["harden"] + {args!r} + ["--out", os.path.join({str(tmp_path)!r}, "rank" + os.environ["RANK"])]))
    """,
        tmp_path,
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert not (tmp_path / "rank1").exists()
    assert (tmp_path / "rank0" / "model.safetensors").exists() and (tmp_path / "rank0" / "report.json").exists()
    code, _, err = cli("harden", *args, "--out", tmp_path / "single")
    assert code == 0, err
    ddp_log = json.loads((tmp_path / "rank0" / "train_log.jsonl").read_text().splitlines()[0])
    single_log = json.loads((tmp_path / "single" / "train_log.jsonl").read_text().splitlines()[0])
    assert ddp_log["loss"] == pytest.approx(single_log["loss"], rel=1e-6)  # measured: 1.8e-8
    assert json.loads((tmp_path / "rank0" / "report.json").read_text())["runtime"]["world_size"] == 2


def test_ddp_measures_lr_auto_as_one_process_does(tmp_path, cli):
    """lr auto's sweep under torchrun: every rank trains and scores the candidates together (a rank that skipped it
    would hang the other in DDP's all-reduce) and they reach the one-process choice from the same scores."""
    from hardenctl.demo import train_clean

    model = digits_model("test_efficientnet_gn")
    train_clean(model, load_dataset("digits-train"), epochs=4, seed=0)
    checkpoint = save_model(model, tmp_path / "gn.safetensors")
    args = [
        str(checkpoint),
        "--recipe",
        "pgd-at",
        "--data",
        "digits-train",
        "--epochs",
        "3",
        "--batch-size",
        "128",
        "--lr",
        "auto",
        "--set",
        "lr_sweep=[0.01,1,400]",
        "--set",
        "lr_sweep_budget=0.5",
        "--set",
        "attack_steps=2",
        "--set",
        "eps=0.1",
        "--set",
        "attack_alpha=0.05",
        "--set",
        "augment=none",
        "--set",
        "monitor_n=128",
        "--eval-n",
        "16",
        "--suite",
        "quick",
        "--eps",
        "0.1",
        "--device",
        "cpu",
        "--quiet",
    ]
    ddp = torchrun(
        f"""
        import sys
        from hardenctl.cli import main
        sys.exit(main(["harden"] + {args!r} + ["--out", {str(tmp_path / "ddp")!r}]))
    """,
        tmp_path,
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    code, _, err = cli("harden", *args, "--out", tmp_path / "single")
    assert code == 0, err
    ddp_sweep, single_sweep = (
        json.loads((tmp_path / name / "report.json").read_text())["lr_sweep"] for name in ("ddp", "single")
    )
    # What is deterministic across process layouts is compared exactly: the plan (steps, images scored), the candidates
    # and, for candidates this far apart (lr 5e-5 barely trains, 2.0 collapses), the choice; the DDP run's choice also
    # follows from its own scores by the rule.
    assert (
        len(single_sweep["candidates"]) == 3
        and single_sweep["steps"] >= 4
        and single_sweep["chosen"] == pytest.approx(0.005)
    )
    assert (ddp_sweep["steps"], ddp_sweep["scored_n"]) == (single_sweep["steps"], single_sweep["scored_n"])
    assert ddp_sweep["chosen"] == single_sweep["chosen"] == chosen_lr(ddp_sweep["candidates"], ddp_sweep["scored_n"])[0]
    # The scores are not bit-equal: DDP all-reduces two half-batch gradients, one process sums one batch, and PGD on
    # held-out images near the boundary amplifies that rounding. Measured for this setting (issue 27): one process gives
    # identical scores at 1, 2 and 4 threads; DDP moved a candidate's robust accuracy by up to 3 of the 100 scored
    # images (0.45-0.49 for lr 5e-5 across runs, 0.55 vs 0.57 for lr 0.005). The tolerance is 5 images.
    tolerance = 5 / ddp_sweep["scored_n"] + 1e-9
    for ddp_candidate, single_candidate in zip(ddp_sweep["candidates"], single_sweep["candidates"]):
        assert ddp_candidate["lr"] == single_candidate["lr"]
        for score in ("clean", "robust"):
            assert abs(ddp_candidate[score] - single_candidate[score]) <= tolerance, (ddp_candidate, single_candidate)


# ---------------------------------------------------------------------------------------------
# bad input: one line, exit 2, nothing written
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "extra, named",
    [
        (["--set", "betta=5"], ["unknown parameter 'betta'", "valid parameters:", "beta"]),
        (["--set", "schedule=sometimes"], ["schedule='sometimes'", "step, cosine, onecycle, constant"]),
        (["--set", "beta=-1"], ["beta=-1", ">= 0"]),
        (["--lr", "sweep"], ["--lr: 'sweep' is neither a number nor auto", "--lr auto"]),
        (["--set", "epochs=3"], ["--epochs 2 contradicts --set epochs=3"]),
        (["--recipe", "marty"], ["unknown recipe 'marty'"]),
        (["--batch-size", "4096"], ["batch_size 4096 is larger than the 1294 training images"]),
        (["--amp", "fp16"], ["--amp fp16 needs a CUDA device"]),
        (["--amp", "bf16"], ["--amp bf16 needs a CUDA device"]),
        (["--suite", "fastest"], ["unknown suite 'fastest'"]),
        (["--eval-n", "0"], ["--eval-n must be at least 1"]),
        (["--lr", "fast"], ["--lr: 'fast' is neither a number nor auto", "--lr 0.01"]),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(cli, digits_model_path, tmp_path, extra, named):
    out = tmp_path / "out"
    code, stdout, err = cli(
        "harden", digits_model_path, "--recipe", "mart", "--data", "digits-train", "--epochs", "2", "--out", out, *extra
    )
    assert code == 2 and stdout == ""
    assert err.startswith("error: ") and err.strip().count("\n") == 0 and "Traceback" not in err, err
    for fragment in named:
        assert fragment in err
    assert not out.exists()


def tiny_npz(path, n: int):
    """n digits-test images as an .npz (uint8 N×8×8×1); n = 0 gives an empty file that loads as 0 images."""
    if n == 0:
        np.savez(path, x=np.zeros((0, 8, 8, 1), np.uint8), y=np.zeros((0,), np.int64))
        return path
    data = load_dataset("digits-test").head(n)
    np.savez(path, x=data.x.permute(0, 2, 3, 1).numpy(), y=data.y.numpy().astype(np.int64))
    return path


@pytest.mark.parametrize(
    "data, eval_data, named",
    [
        ("empty", None, ["no samples to train on", "empty.npz has 0 images"]),
        ("empty", "digits-test", ["no samples to train on"]),
        (
            "four",
            None,
            [
                "the held-out split of 4 images at holdout_fraction 0.1 rounds to 0 images",
                "raise holdout_fraction to at least 0.25",
                "--eval-data with --set holdout_fraction=0",
            ],
        ),
        (
            "four",
            "digits-test",
            [
                "the held-out split of 4 images at holdout_fraction 0.1 rounds to 0 images",
                "raise holdout_fraction to at least 0.25",
                "--set holdout_fraction=0 to save the last epoch",
            ],
        ),
        ("digits-train", "empty", ["no samples to evaluate on", "empty.npz has 0 images"]),
    ],
)
def test_empty_data_or_a_held_out_split_of_zero_is_one_line_exit_2_before_anything_is_written(
    cli, digits_model_path, tmp_path, data, eval_data, named
):
    """Before: an empty --data asked for '--batch-size 1'; 4 images trained silently without the held-out split the
    recipe asked for (saving the last epoch, noted as 'holdout_fraction is 0'); an empty --eval-data failed after
    training, with --out already written."""
    files = {"empty": tiny_npz(tmp_path / "empty.npz", 0), "four": tiny_npz(tmp_path / "four.npz", 4)}
    assert len(load_dataset(str(files["empty"]))) == 0  # data.py loads an empty .npz: the refusal is harden's
    out = tmp_path / "out"
    args = [
        "harden",
        digits_model_path,
        "--recipe",
        "pgd-at",
        "--data",
        files.get(data, data),
        "--epochs",
        "1",
        "--batch-size",
        "2",
        "--set",
        "attack_steps=1",
        "--eval-n",
        "4",
        "--suite",
        "quick",
        "--device",
        "cpu",
        "--out",
        out,
    ]
    if eval_data is not None:
        args += ["--eval-data", files.get(eval_data, eval_data)]
    code, stdout, err = cli(*args)
    assert code == 2 and stdout == ""
    assert err.startswith("error: ") and err.strip().count("\n") == 0 and "Traceback" not in err, err
    assert all(fragment in err for fragment in named), err
    assert not out.exists()


class _Prepared(Exception):
    """Raised by the spy below to stop ``harden`` right after ``recipe.prepare``."""


def initial_state(name: str, seed: int, tmp_path) -> dict[str, torch.Tensor]:
    """The state_dict ``harden`` builds with ``recipe.prepare`` for ``--seed seed``, before any training step."""
    from hardenctl.training import harden

    recipe = load_recipe(name, {"hidden": 8} if name == "fsr" else {"width": 4, "depth": 1})
    real, seen = recipe.prepare, {}

    def spy(model, *args, **kwargs):
        seen.update({k: v.detach().clone() for k, v in real(model, *args, **kwargs).state_dict().items()})
        raise _Prepared

    recipe.prepare = spy
    out = tmp_path / f"{name}-{seed}"
    with pytest.raises(_Prepared):
        harden(
            digits_model(),
            recipe,
            load_dataset("digits-train").head(256),
            None,
            HardenOptions(out_dir=out, seed=seed, device="cpu", amp="off"),
        )
    assert not out.exists()
    return seen


@pytest.mark.parametrize("name, prefix", [("fsr", "model.layer4.fsr."), ("atop", "purifier.")])
def test_seed_initialises_the_inserted_modules(name, prefix, tmp_path):
    """FSR modules and the AToP purifier come from --seed (before: always from seed 0)."""
    first, again, other = (initial_state(name, seed, tmp_path) for seed in (0, 0, 1))
    added = [k for k in first if k.startswith(prefix) and first[k].is_floating_point() and first[k].dim() > 1]
    assert added and first.keys() == again.keys() == other.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)  # same seed: the same modules
    assert all(not torch.equal(first[k], other[k]) for k in added)  # another seed: other weights in every layer
    backbone = [k for k in first if not k.startswith(prefix)]
    assert backbone and all(torch.equal(first[k], other[k]) for k in backbone)  # the input model itself is not re-drawn


def test_a_recipe_file_with_an_unknown_key_is_exit_2(cli, digits_model_path, tmp_path):
    recipe = tmp_path / "mine.yaml"
    recipe.write_text("recipe: trades\nbeta: 1\nlearning_rate: 0.1\n")
    code, _, err = cli(
        "harden", digits_model_path, "--recipe", recipe, "--data", "digits-train", "--out", tmp_path / "out"
    )
    assert code == 2 and "unknown parameter 'learning_rate'" in err and "valid parameters: epochs, batch_size" in err
    assert not (tmp_path / "out").exists()


def test_recipes_command_lists_and_describes(cli):
    code, stdout, _ = cli("recipes", "--json")
    listed = {r["name"]: r for r in json.loads(stdout)}
    assert code == 0 and {"mart", "pgd-at", "trades", "standard"} <= set(listed)
    assert "ICLR 2020" in listed["mart"]["paper"] and listed["trades"]["improves"]
    code, stdout, _ = cli("recipes", "mart", "--json")
    params = {p["key"]: p for p in json.loads(stdout)["parameters"]}
    assert code == 0 and params["beta"]["default"] == 6.0 and "misclassification" in params["beta"]["meaning"]
    code, stdout, _ = cli("recipes", "mart")
    assert code == 0 and "beta" in stdout and "attack_alpha" in stdout
    code, _, err = cli("recipes", "nope")
    assert code == 2 and "unknown recipe 'nope'" in err


def test_an_earlier_input_report_is_reused_only_for_the_same_evaluation(mart_run, digits_model_path):
    """Comparing recipes on one checkpoint evaluates the input model once (benchmarks/bench_recipes.py)."""
    from hardenctl.evaluation import EvalConfig
    from hardenctl.report import report_from_dict
    from hardenctl.training import same_evaluation

    earlier = report_from_dict(json.loads((mart_run / "report.json").read_text())["input"])
    info = load_model(digits_model_path).info
    data = load_dataset("digits-test").head(200)
    same = EvalConfig(n=200, seed=0, suite="quick", eps=0.1)
    assert same_evaluation(earlier, info, data, same)
    assert not same_evaluation(earlier, info, data, EvalConfig(n=200, seed=1, suite="quick", eps=0.1))
    assert not same_evaluation(earlier, info, data, EvalConfig(n=200, seed=0, suite="standard", eps=0.1))
    assert not same_evaluation(earlier, info, data.head(100), EvalConfig(n=100, seed=0, suite="quick", eps=0.1))


def test_the_harden_report_shows_paths_and_names_as_spelled(mart_run):
    """A training folder or checkpoint path with Markdown in it cannot break the harden report (issue 19, item 4)."""
    from hardenctl.report import report_from_dict
    from hardenctl.training import HardenReport

    data = json.loads((mart_run / "report.json").read_text())
    data.update(input=report_from_dict(data["input"]), hardened=report_from_dict(data["hardened"]))
    data["data"] = {**data["data"], "train": "photos/a | b **x**"}
    data["input_checkpoint"] = {**data["input_checkpoint"], "path": "m`odel.pt"}
    fields = HardenReport.__dataclass_fields__
    markdown = HardenReport(**{k: v for k, v in data.items() if k in fields}).to_markdown()
    assert "photos/a | b **x**`" in markdown and "``m`odel.pt``" in markdown  # code spans: nothing inside is markup
