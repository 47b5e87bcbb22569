"""``lr: auto``: candidates measured on the held-out split, the clear winner kept, the run unchanged by the trials,
the cost bounded."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from hardenctl.recipes import load_recipe
from hardenctl.training.lr_sweep import MIN_SCORED, attack_passes, chosen_lr, sweep_plan

DIGITS = (
    "--recipe",
    "pgd-at",
    "--data",
    "digits-train",
    "--eval-data",
    "digits-test",
    "--epochs",
    "3",
    "--set",
    "eps=0.1",
    "--set",
    "attack_alpha=0.025",
    "--set",
    "augment=none",
    "--eval-n",
    "40",
    "--suite",
    "quick",
    "--eps",
    "0.1",
    "--quiet",
)


def test_the_best_robust_accuracy_wins_and_noise_ties_go_to_clean_accuracy():
    clear = [
        {"lr": 0.001, "clean": 0.95, "robust": 0.30},
        {"lr": 0.01, "clean": 0.93, "robust": 0.45},
        {"lr": 1.0, "clean": 0.10, "robust": 0.10},
    ]
    assert chosen_lr(clear, 500)[0] == 0.01
    tied = [{"lr": 0.01, "clean": 0.90, "robust": 0.44}, {"lr": 0.04, "clean": 0.80, "robust": 0.45}]
    chosen, why = chosen_lr(tied, 144)  # one point apart with ~4 points of noise: the clean accuracy decides
    assert chosen == 0.01 and "within one standard error" in why
    assert chosen_lr(tied, 1_000_000)[0] == 0.04  # with a million images one point is real


def sweep_work(config, steps: int, scored: int, batch: int) -> float:
    """Image passes the sweep spends: every candidate's steps and its held-out scoring."""
    return len(config.lr_sweep) * (steps * batch * attack_passes(config) + scored * (config.monitor_steps + 1))


def run_work(config, steps_per_epoch: int, batch: int, train_n: int, holdout_n: int) -> float:
    monitored = min(config.monitor_n, train_n) + min(config.monitor_n, holdout_n)
    return config.epochs * (steps_per_epoch * batch * attack_passes(config) + monitored * (config.monitor_steps + 1))


@pytest.mark.parametrize(
    "epochs, train_n, holdout_n, recipe_overrides",
    [
        (10, 45_000, 5_000, {}),  # a CIFAR-sized default run
        (3, 9_500, 500, {"monitor_n": 250}),  # the study budget of RESULTS.md
        (5, 900, 100, {"batch_size": 32, "monitor_n": 100}),  # imagewoof's 900 photos
        (10, 45_000, 5_000, {"attack": "fgsm-rs"}),  # one attack pass per step: steps are cheap, scoring is not
    ],
)
def test_the_sweep_costs_its_budget_scoring_included(epochs, train_n, holdout_n, recipe_overrides):
    config = load_recipe("pgd-at", {"epochs": epochs, **recipe_overrides}).config
    batch = config.batch_size
    steps, scored = sweep_plan(config, train_n // batch, batch, train_n, holdout_n)
    assert steps >= 4 and min(MIN_SCORED, holdout_n) <= scored <= min(config.monitor_n, holdout_n)
    spent, budget = (
        sweep_work(config, steps, scored, batch),
        config.lr_sweep_budget * run_work(config, train_n // batch, batch, train_n, holdout_n),
    )
    assert budget * 0.85 <= spent <= budget, (steps, scored, spent / budget)  # all of it, and never more


def test_a_short_run_has_no_steps_to_spend():
    config = load_recipe("mart", {"epochs": 2}).config  # the small budget: 2 epochs of 921 images, 7 steps each
    steps, _ = sweep_plan(config, 921 // 128, 128, 921, 103)
    assert steps < 4


@pytest.fixture(scope="module")
def swept(digits_model_path, tmp_path_factory):
    from hardenctl.cli import main

    out = tmp_path_factory.mktemp("sweep")
    assert (
        main(
            [
                "harden",
                str(digits_model_path),
                *DIGITS,
                "--lr",
                "auto",
                "--set",
                "lr_sweep=[0.01,2,400]",
                "--set",
                "lr_sweep_budget=0.5",
                "--out",
                str(out / "swept"),
            ]
        )
        == 0
    )
    return out


def test_the_sweep_keeps_the_clearly_best_candidate_and_records_every_one(swept):
    report = json.loads((swept / "swept" / "report.json").read_text())
    sweep = report["lr_sweep"]
    assert [c["lr"] for c in sweep["candidates"]] == pytest.approx(
        [5e-5, 0.01, 2.0]
    )  # 0.005 (linear scaling) × lr_sweep
    assert sweep["chosen"] == pytest.approx(0.01) and report["recipe_config"]["lr"] == pytest.approx(0.01)
    scores = {round(c["lr"], 6): c for c in sweep["candidates"]}
    assert scores[2.0]["clean"] < 0.5  # lr 2 wrecks the model; 5e-5 barely moves it
    assert scores[0.01]["robust"] > scores[5e-05]["robust"] and scores[0.01]["robust"] > scores[2.0]["robust"]
    assert (
        sweep["steps"] == 6 and sweep["scored_n"] == 144
    )  # all 144 held-out images: half the budget affords them and report["runtime"]["lr_sweep_seconds"] > 0
    recipe_yaml = (swept / "swept" / "recipe.yaml").read_text()
    assert "# lr auto → 0.01, measured: 5e-05 (clean" in recipe_yaml and "\nlr: 0.01\n" in recipe_yaml
    assert any(d.startswith("lr auto → 0.01, measured") for d in report["decisions"])


def test_the_trials_leave_the_run_as_a_run_with_that_lr(swept, digits_model_path):
    """The candidates train copies on their own: the run afterwards is bit-identical to one given --lr 0.01."""
    from hardenctl.cli import main

    assert (
        main(
            [
                "harden",
                str(digits_model_path),
                *DIGITS,
                "--lr",
                "0.01",
                "--set",
                "lr_sweep_budget=0.5",
                "--out",
                str(swept / "given"),
            ]
        )
        == 0
    )
    swept_weights, given_weights = (load_file(str(swept / name / "model.safetensors")) for name in ("swept", "given"))
    assert swept_weights.keys() == given_weights.keys()
    assert all(torch.equal(swept_weights[k], given_weights[k]) for k in swept_weights)


def test_without_a_held_out_split_or_steps_it_says_so_and_uses_the_linear_scaling_lr(digits_model_path, tmp_path):
    from hardenctl.cli import main

    assert main(["harden", str(digits_model_path), *DIGITS, "--lr", "auto", "--out", str(tmp_path / "short")]) == 0
    report = json.loads((tmp_path / "short" / "report.json").read_text())
    assert report["lr_sweep"]["candidates"] == [] and "too short" in report["lr_sweep"]["why"]
    assert (
        "1 steps per candidate" in report["lr_sweep"]["why"]
        and "--epochs 7 or more would let it measure" in report["lr_sweep"]["why"]
    )
    assert report["recipe_config"]["lr"] == pytest.approx(0.005)


def test_the_sweep_spends_its_share_of_the_runs_forward_passes(digits_model_path, tmp_path):
    """Counted, not modelled: images through the candidates' copies vs through the run's model (monitoring included)."""
    from hardenctl.data import load_dataset
    from hardenctl.models import load_model
    from hardenctl.training import Distributed, HardenOptions, split_holdout, train

    model = load_model(digits_model_path)
    images: dict[int, int] = {}
    alive: list = []  # holds every copy seen, so a freed candidate's id is never reused by the next one

    def count(module, inputs, output):
        if id(module) not in images:
            alive.append(module)
        images[id(module)] = images.get(id(module), 0) + inputs[0].shape[0]

    model.register_forward_hook(count)  # copied with the module: each candidate counts under its own id
    recipe = load_recipe(
        "pgd-at", {"epochs": 3, "eps": 0.1, "attack_alpha": 0.025, "augment": "none", "lr_sweep_budget": 0.5}
    )
    split = split_holdout(load_dataset("digits-train"), 0.1, 0)
    result = train(model, recipe, split, HardenOptions(out_dir=tmp_path, device="cpu", amp="off"), Distributed(), {})
    assert len(result.lr_sweep.candidates) == 3 and result.lr_sweep.steps >= 4
    run = images.pop(id(model))
    assert len(images) == 3  # one copy per candidate
    share = sum(images.values()) / run
    assert 0.4 <= share <= 0.5, share  # lr_sweep_budget 0.5 of the run, scoring included
