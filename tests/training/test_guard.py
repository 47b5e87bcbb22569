"""The overfitting guard decides what ships, whatever ``select`` says, and the report says what really happened
(issue 19).

The guard's decisions are pure functions of the epoch records (:func:`decide`, :func:`verdict`,
:func:`choose_saved_epoch`), tested on records made by hand; the whole path (train → what ``model.safetensors`` holds →
the report) runs with a scripted monitor handed to ``train``.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from guard_helpers import DIGITS, OVERFIT, Scripted, guarded_run
from safetensors.torch import load_file

from hardenctl.data import load_dataset
from hardenctl.evaluation import EvalConfig
from hardenctl.models import load_model
from hardenctl.recipes import load_recipe
from hardenctl.training import (
    FinalEvaluation,
    HardenOptions,
    choose_saved_epoch,
    decide,
    outputs,
    read_checkpoint_state,
    verdict,
)


def config(guard: str, **extra):
    return load_recipe("pgd-at", {**DIGITS, "attack": "fgsm", "co_guard": guard, **extra}).config


def record(epoch: int, pgd: float, fgsm: float, collapsed: bool = False, holdout: bool = True) -> dict:
    split = "holdout" if holdout else "train"
    other = "train" if holdout else "holdout"
    return {
        "epoch": epoch,
        f"{split}_robust_accuracy": pgd,
        f"{split}_clean_accuracy": 0.8,
        f"{other}_robust_accuracy": None,
        f"{other}_clean_accuracy": None,
        "guard_fgsm_accuracy": fgsm,
        "collapsed": collapsed,
    }


# epochs 1-2 healthy (PGD 45%, 55%), epoch 3 collapsed (PGD 5% while FGSM rose)
HISTORY = [record(1, 0.45, 0.60), record(2, 0.55, 0.70), record(3, 0.05, 0.75, collapsed=True)]


# ---------------------------------------------------------------------------------------------
# the decisions, from the records alone
# ---------------------------------------------------------------------------------------------
def test_decide_reads_only_the_records():
    assert decide(config("stop"), HISTORY).stop and not decide(config("stop"), HISTORY[:2]).stop
    lower = decide(config("lower", co_eps_factor=0.5, co_lr_factor=0.25), HISTORY)
    assert (lower.stop, lower.back_to, lower.eps_scale, lower.lr_scale) == (False, 2, 0.5, 0.25)
    assert decide(config("lower"), HISTORY + [record(4, 0.50, 0.6)]).back_to is None  # only right after a collapse
    warn = decide(config("warn"), HISTORY)
    assert (warn.stop, warn.back_to, warn.eps_scale, warn.lr_scale) == (False, None, 1.0, 1.0)


def test_lower_without_a_healthy_epoch_goes_back_nowhere_and_says_so():
    """Before: the line said 'training goes on from the best healthy epoch' while nothing was reloaded."""
    first = record(1, 0.05, 0.75)
    input_scores = (0.9, 0.60, 0.70)  # the input model: 60% PGD, 70% FGSM on the held-out images
    fields = verdict(config("lower"), first, [], input_scores)
    assert fields["collapsed"] and "(the input model)" in fields["guard"]
    assert "no healthy epoch to go back to: training goes on from these collapsed weights" in fields["guard"]
    assert "from the best healthy epoch" not in fields["guard"]
    assert decide(config("lower"), [{**first, **fields}]).back_to is None
    stop = verdict(config("stop"), first, [], input_scores)["guard"]
    assert "no epoch before it was healthy, so the saved model is this collapsed one" in stop
    assert "chosen among the healthy epochs" in verdict(config("stop"), HISTORY[2], HISTORY[:2], input_scores)["guard"]


def test_without_a_held_out_split_the_guard_reads_the_training_monitor_and_has_no_input_reference():
    history = [record(e, p, f, holdout=False) for e, p, f in ((1, 0.45, 0.6), (2, 0.55, 0.7))]
    assert not verdict(config("stop"), history[0], [], (None, None, None))[
        "collapsed"
    ]  # epoch 1: nothing to compare with
    fields = verdict(config("stop"), record(3, 0.05, 0.75, holdout=False), history, (None, None, None))
    assert fields["collapsed"] and "training-monitor PGD accuracy fell to 5.0% from 55.0% (epoch 2)" in fields["guard"]
    # lower goes back to the last healthy epoch: nothing ranks them without held-out numbers (before: to the collapsed
    # one)
    assert decide(config("lower"), history + [{**record(3, 0.05, 0.75, holdout=False), **fields}]).back_to == 2


@pytest.mark.parametrize(
    "select, holdout, expected",
    [
        ("best", True, ("best", 2, 3, True, None)),
        ("last", True, ("last", 2, 3, True, 3)),  # before: the collapsed epoch 3 shipped
        ("best", False, ("last", 2, 3, True, 3)),  # holdout_fraction 0: the last healthy epoch, never the collapsed one
    ],
)
def test_a_collapsed_epoch_never_ships_whatever_select_says(select, holdout, expected):
    history = (
        HISTORY
        if holdout
        else [{**h, "holdout_robust_accuracy": None, "holdout_clean_accuracy": None} for h in HISTORY]
    )
    saved = choose_saved_epoch(history, select, "robust", range(1, 4), has_holdout=holdout)
    assert (saved.selected, saved.epoch, saved.other, saved.healthy, saved.passed_over) == expected


def test_when_every_epoch_collapsed_the_last_ships_and_says_so():
    history = [record(1, 0.05, 0.75, collapsed=True)]
    saved = choose_saved_epoch(history, "best", "robust", range(1, 2), has_holdout=True)
    assert (saved.epoch, saved.healthy) == (1, False)
    notes = outputs.selection_notes(saved, [{**history[0], "guard": "line"}], False, True, 128)
    assert any(n.startswith("every epoch collapsed") for n in notes)


# ---------------------------------------------------------------------------------------------
# the whole path: what model.safetensors holds, what the report says
# ---------------------------------------------------------------------------------------------
def write(run_dir, digits_model_path, result, recipe, no_holdout: bool):
    """The engine's writing half on a finished (scripted) training run."""
    model = load_model(digits_model_path)
    facts = outputs.RunFacts(
        result=result,
        data={"train": "digits-train", "train_n": 256, "holdout_n": 64},
        runtime={"device": "cpu", "world_size": 1, "amp": "off", "channels_last": False, "train_seconds": 0.0},
        no_holdout=no_holdout,
    )
    options = HardenOptions(out_dir=run_dir, device="cpu", amp="off", eval_n=16)
    evaluation = FinalEvaluation(load_dataset("digits-test").head(16), EvalConfig(n=16, attacks=["fgsm"], eps=0.1))
    return outputs.evaluate_and_write(copy.deepcopy(model), model, recipe, facts, evaluation, options)


def saved_weights_are(run_dir, epoch: int) -> bool:
    saved = load_file(run_dir / "model.safetensors")
    state = read_checkpoint_state(run_dir / "checkpoints" / f"epoch_{epoch:04d}.pt")["model"]
    return bool(saved) and all(torch.equal(saved[k], state["model." + k]) for k in saved)


@pytest.mark.parametrize(
    "guard, select, holdout, epochs, collapsed",
    [
        ("stop", "last", 0.2, [1, 2, 3], [3]),
        ("warn", "last", 0.2, [1, 2, 3, 4], [3, 4]),
        ("stop", "best", 0.0, [1, 2, 3], [3]),
        ("warn", "best", 0.0, [1, 2, 3, 4], [3, 4]),
    ],
)
def test_the_saved_model_is_the_healthy_epoch_and_the_report_says_why(
    tmp_path, digits_model_path, guard, select, holdout, epochs, collapsed
):
    """select: last or holdout_fraction 0 used to save the collapsed last epoch under a line saying it chose a healthy
    one."""
    scripted = Scripted(**OVERFIT, holdout=holdout > 0)
    result = guarded_run(tmp_path, digits_model_path, guard, scripted, holdout=holdout, select=select)
    assert [h["epoch"] for h in result.history] == epochs
    assert [h["epoch"] for h in result.history if h["collapsed"]] == collapsed
    recipe = load_recipe(
        "pgd-at",
        {
            **DIGITS,
            "epochs": 4,
            "attack": "fgsm",
            "co_guard": guard,
            "batch_size": 64,
            "holdout_fraction": holdout,
            "select": select,
        },
    )
    done = write(tmp_path, digits_model_path, result, recipe, no_holdout=holdout == 0)
    assert saved_weights_are(tmp_path, 2) and not saved_weights_are(tmp_path, epochs[-1])
    report = json.loads((tmp_path / "report.json").read_text())
    assert (report["selected"], report["selected_epoch"], report["passed_over"]) == ("last", 2, epochs[-1])
    assert report["other_label"] == f"last (epoch {epochs[-1]}, collapsed)"
    notes = " | ".join(report["notes"])
    assert f"would have saved epoch {epochs[-1]}, which collapsed: the last healthy epoch, 2, is saved instead" in notes
    markdown = (tmp_path / "report.md").read_text()
    assert "holds the **last healthy** epoch: epoch 2 of" in markdown
    if holdout == 0:
        assert "the last healthy epoch is saved; the overfitting guard read the first 128 training images" in notes
        assert "training-monitor PGD accuracy" in result.history[2]["guard"]
    assert done.report.selected_epoch == 2


def test_lower_without_a_healthy_epoch_logs_what_it_did(tmp_path, digits_model_path):
    """Epoch 1 collapses against the input model (PGD 60% → 5%, FGSM 70% → 75%): nothing to go back to."""
    lines: list[str] = []
    scripted = Scripted(pgd=[0.05, 0.50], fgsm=[0.75, 0.70], input_pgd=0.60, input_fgsm=0.70)
    recipe = load_recipe("pgd-at", {**DIGITS, "epochs": 2, "attack": "fgsm", "co_guard": "lower", "batch_size": 64})
    from hardenctl.training import Distributed, Feedback, Monitoring, split_holdout, train

    result = train(
        load_model(digits_model_path),
        recipe,
        split_holdout(load_dataset("digits-train").head(320), 0.2, 0),
        HardenOptions(out_dir=tmp_path, device="cpu", amp="off"),
        Distributed(),
        {},
        Feedback(log=lines.append),
        Monitoring(scorer=scripted),
    )
    assert [h["collapsed"] for h in result.history] == [True, False]
    assert not any("back to the weights" in line for line in lines)
    assert any("no healthy epoch to go back to after the collapse of epoch 1" in line for line in lines)
    assert result.history[1]["train_eps"] == pytest.approx(0.05)  # ε lowered all the same (co_eps_factor 0.5)
