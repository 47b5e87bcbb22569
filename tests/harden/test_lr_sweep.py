"""``lr: sweep``: candidates measured on the held-out split, the clear winner kept, the run unchanged by the trials."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from hardenctl.harden.lr_sweep import choose, sweep_steps

DIGITS = ("--recipe", "pgd-at", "--data", "digits-train", "--eval-data", "digits-test", "--epochs", "3", "--set", "eps=0.1",
          "--set", "attack_alpha=0.025", "--set", "augment=none", "--eval-n", "40", "--suite", "quick", "--eps", "0.1",
          "--quiet")


def test_the_best_robust_accuracy_wins_and_noise_ties_go_to_clean_accuracy():
    clear = [{"lr": 0.001, "clean": 0.95, "robust": 0.30}, {"lr": 0.01, "clean": 0.93, "robust": 0.45},
             {"lr": 1.0, "clean": 0.10, "robust": 0.10}]
    assert choose(clear, 500)[0] == 0.01
    tied = [{"lr": 0.01, "clean": 0.90, "robust": 0.44}, {"lr": 0.04, "clean": 0.80, "robust": 0.45}]
    chosen, why = choose(tied, 144)  # one point apart with ~4 points of noise: the clean accuracy decides
    assert chosen == 0.01 and "within one standard error" in why
    assert choose(tied, 1_000_000)[0] == 0.04  # with a million images one point is real


def test_the_budget_is_a_share_of_the_runs_steps():
    assert sweep_steps(10, 390, 0.1, 5) == 78
    assert sweep_steps(3, 10, 0.1, 5) == 0


@pytest.fixture(scope="module")
def swept(digits_model_path, tmp_path_factory):
    from hardenctl.cli import main

    out = tmp_path_factory.mktemp("sweep")
    assert main(["harden", str(digits_model_path), *DIGITS, "--lr", "sweep", "--set", "lr_sweep=[0.01,2,400]",
                 "--set", "lr_sweep_budget=0.5", "--out", str(out / "swept")]) == 0
    return out


def test_the_sweep_keeps_the_clearly_best_candidate_and_records_every_one(swept):
    report = json.loads((swept / "swept" / "report.json").read_text())
    sweep = report["lr_sweep"]
    assert [c["lr"] for c in sweep["candidates"]] == pytest.approx([5e-5, 0.01, 2.0])  # 0.005 (linear scaling) × lr_sweep
    assert sweep["chosen"] == pytest.approx(0.01) and report["recipe_config"]["lr"] == pytest.approx(0.01)
    scores = {round(c["lr"], 6): c for c in sweep["candidates"]}
    assert scores[2.0]["clean"] < 0.5  # lr 2 wrecks the model; 5e-5 barely moves it
    assert scores[0.01]["robust"] > scores[5e-05]["robust"] and scores[0.01]["robust"] > scores[2.0]["robust"]
    assert sweep["steps"] == 5 and sweep["scored_n"] == 144 and report["runtime"]["lr_sweep_seconds"] > 0
    recipe_yaml = (swept / "swept" / "recipe.yaml").read_text()
    assert "# lr sweep → 0.01: 5e-05 (clean" in recipe_yaml and "\nlr: 0.01\n" in recipe_yaml
    assert any(d.startswith("lr sweep → 0.01") for d in report["decisions"])


def test_the_trials_leave_the_run_as_a_run_with_that_lr(swept, digits_model_path):
    """The candidates train copies on their own: the run afterwards is bit-identical to one given --lr 0.01."""
    from hardenctl.cli import main

    assert main(["harden", str(digits_model_path), *DIGITS, "--lr", "0.01", "--set", "lr_sweep_budget=0.5",
                 "--out", str(swept / "given")]) == 0
    swept_weights, given_weights = (load_file(str(swept / name / "model.safetensors")) for name in ("swept", "given"))
    assert swept_weights.keys() == given_weights.keys()
    assert all(torch.equal(swept_weights[k], given_weights[k]) for k in swept_weights)


def test_without_a_held_out_split_or_steps_it_says_so_and_uses_the_linear_scaling_lr(digits_model_path, tmp_path):
    from hardenctl.cli import main

    assert main(["harden", str(digits_model_path), *DIGITS, "--lr", "sweep", "--out", str(tmp_path / "short")]) == 0
    report = json.loads((tmp_path / "short" / "report.json").read_text())
    assert report["lr_sweep"]["candidates"] == [] and "too short" in report["lr_sweep"]["why"]
    assert report["recipe_config"]["lr"] == pytest.approx(0.005)
