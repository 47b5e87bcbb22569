"""AToP: the config (derived epochs, one-line errors), the phases, the loss (λ = 0 → pre-training loss, the formula),
a frozen bit-identical classifier, and `hardenctl harden --recipe atop` → `hardenctl eval` end to end on digits."""

from __future__ import annotations

import copy
import dataclasses
import json
import re

import pytest
import torch
import torch.nn.functional as F

from hardenctl.attacks import FGSM
from hardenctl.data import load_dataset
from hardenctl.errors import UserError
from hardenctl.models import create_timm_model, load_model, wrap_model
from hardenctl.models.purifier import PurifiedClassifier
from hardenctl.recipes import REGISTRY, describe, load_recipe, recipe_path
from hardenctl.recipes.atop import BPDA_LABEL, Atop
from hardenctl.training import DataSplit, Distributed, HardenOptions, learning_rate, train

SMALL = {"block": 2, "width": 8, "depth": 1, "eps": 0.1, "pretrain_epochs": 2, "finetune_epochs": 2}


def digits_classifier():
    torch.manual_seed(0)
    net = create_timm_model("test_resnet", num_classes=10, in_chans=1)
    return wrap_model(net, "test_resnet", 10, (0.5,), (0.25,), in_chans=1, input_size=(8, 8)).eval()


def prepared(**overrides):
    recipe = load_recipe("atop", {**SMALL, **overrides})
    return recipe, recipe.prepare(digits_classifier())


def batch(n: int = 16):
    data = load_dataset("digits-train").head(n)
    return data.pixels(0, n), data.y


# ---------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------
def test_the_yaml_documents_every_parameter_and_the_defaults_are_the_papers():
    cls, parameters = describe("atop")
    text = recipe_path("atop").read_text()
    assert cls is Atop and REGISTRY["atop"] is Atop
    for f in dataclasses.fields(cls.Config):
        assert re.search(rf"^{f.name}:", text, re.MULTILINE), f"atop.yaml lacks {f.name}"
    assert all(p.meaning for p in parameters), [p.key for p in parameters if not p.meaning]
    c = load_recipe("atop").config
    assert (c.rt, c.sigma, c.missing_rate, c.lambda_cls, c.finetune_lr, c.adam_betas) == (
        "rt2",
        0.25,
        0.25,
        0.05,
        1e-4,
        (0.5, 0.999),
    )
    assert (c.finetune_attack, c.recon_target, c.optimizer, c.weight_decay, c.attack_steps) == (
        "fgsm",
        "clean",
        "adamw",
        0.0,
        0,
    )
    assert c.epochs == c.pretrain_epochs + c.finetune_epochs and c.lr_warmup_epochs == 0


@pytest.mark.parametrize(
    "values, named",
    [
        ({"epochs": 3}, ["epochs=3 cannot be set", "set pretrain_epochs and finetune_epochs"]),
        ({"pretrain_epochs": 0, "finetune_epochs": 0}, ["both 0"]),
        ({"attack_steps": 5}, ["attack_steps=5", "finetune_attack"]),
        ({"gan_weight": 0.1}, ["gan_weight=0.1 is not implemented", "set gan_weight: 0"]),
        ({"finetune_epochs": 2, "warmup_epochs": 2}, ["warmup_epochs=2 leaves none of the 2", "below 2"]),
        ({"warmup_epochs": 0.5}, ["warmup_epochs=0.5 is not a whole number"]),
        ({"rt": "rt4"}, ["rt='rt4'", "rt1, rt2, rt3"]),
        ({"rt": "rt3", "missing_rate": 0.8}, ["rt3 needs missing_rate"]),
        ({"recon_target": "noisy"}, ["recon_target='noisy'", "clean, adversarial"]),
        ({"finetune_lr": 0}, ["finetune_lr=0 is out of range"]),
    ],
)
def test_bad_parameters_are_one_line_errors(values, named):
    with pytest.raises(UserError) as err:
        load_recipe("atop", values)
    message = str(err.value)
    assert "\n" not in message and all(fragment in message for fragment in named), message


def test_the_resolved_recipe_round_trips_with_its_derived_epochs(tmp_path):
    recipe = load_recipe("atop", {"pretrain_epochs": 3, "finetune_epochs": 2})
    path = tmp_path / "recipe.yaml"
    import yaml

    path.write_text(yaml.safe_dump({"recipe": "atop", **recipe.config.to_dict()}))
    again = load_recipe(str(path))
    assert again.config == recipe.config and again.config.epochs == 5


def test_prepare_refuses_blocks_larger_than_the_image_and_a_composite_input():
    with pytest.raises(UserError, match=r"block=16 is larger than the 8x8 images; set block to at most 8"):
        prepared(block=16)
    recipe, model = prepared()
    with pytest.raises(UserError, match="already has an AToP purifier"):
        recipe.prepare(model)


# ---------------------------------------------------------------------------------------------
# phases and the loss
# ---------------------------------------------------------------------------------------------
def test_phases_switch_the_learning_rate_and_the_classification_term():
    recipe = load_recipe(
        "atop", {"pretrain_epochs": 3, "finetune_epochs": 4, "warmup_epochs": 2, "lr": 1e-3, "finetune_lr": 1e-4}
    )
    c = recipe.config
    assert [recipe.cls_weight(e) for e in range(7)] == [0, 0, 0, 0, 0, 0.05, 0.05]
    rates = [learning_rate(c, e, 0, 10) * recipe.lr_factor(e) for e in range(7)]
    assert rates[:3] == [1e-3] * 3 and rates[3:] == pytest.approx(
        [1e-4] * 4
    )  # no lr warm-up: warmup_epochs means the CE term


def test_with_lambda_zero_the_finetuning_loss_is_the_pretraining_loss():
    recipe, model = prepared(lambda_cls=0.0)
    model.train()
    x, y = batch()
    recipe.begin_epoch(0)
    torch.manual_seed(3)
    pre = recipe.loss(model, x, y, x)
    recipe.begin_epoch(SMALL["pretrain_epochs"] + 1)  # fine-tuning, past the warm-up
    assert recipe.finetuning() and recipe.cls_weight() == 0
    torch.manual_seed(3)
    fine = recipe.loss(model, x, y, x)
    assert torch.equal(pre, fine)
    torch.manual_seed(3)
    draw = model.transform.draw(x)
    assert torch.equal(pre, F.l1_loss(model.purifier(model.transform.apply(x, *[draw[0], draw[1][0]]), draw[1][0]), x))


@pytest.mark.parametrize("recon_target", ["clean", "adversarial"])
def test_the_finetuning_loss_is_recon_plus_lambda_ce_on_the_purified_adversarial_point(recon_target):
    recipe, model = prepared(lambda_cls=0.5, recon_target=recon_target)
    model.train()
    x, y = batch()
    recipe.begin_epoch(SMALL["pretrain_epochs"])
    torch.manual_seed(4)
    loss = recipe.loss(model, x, y, x)
    torch.manual_seed(4)
    draw = model.transform.draw(x)
    x_prime = FGSM(0.1)(model.classifier_only(), x, y)  # FGSM on the classifier alone, ε = eps
    assert (x_prime - x).abs().max() <= 0.1 + 1e-6 and not torch.equal(x_prime, x)
    target = x if recon_target == "clean" else x_prime
    recon = F.l1_loss(model(target, draw, "purified"), target)
    expected = recon + 0.5 * F.cross_entropy(model(x_prime, draw), y)
    torch.testing.assert_close(loss, expected)


def test_the_pgd_finetuning_attack_stays_in_the_ball():
    recipe, model = prepared(finetune_attack="pgd", pgd_steps=3, attack_alpha=0.05)
    x, y = batch(8)
    x_prime = recipe.attack(model, x, y)
    assert (x_prime - x).abs().max() <= 0.1 + 1e-6 and float(x_prime.min()) >= 0 and float(x_prime.max()) <= 1


def test_the_classifier_is_bit_identical_after_finetuning_and_only_the_purifier_learns(tmp_path):
    recipe = load_recipe(
        "atop",
        {
            **SMALL,
            "pretrain_epochs": 1,
            "finetune_epochs": 1,
            "batch_size": 32,
            "monitor_n": 16,
            "augment": "none",
            "lambda_cls": 1.0,
        },
    )
    classifier = digits_classifier()
    before = copy.deepcopy(classifier.model.state_dict())  # parameters and BatchNorm buffers (running stats, counts)
    model = recipe.prepare(classifier)
    purifier_before = copy.deepcopy(model.purifier.state_dict())
    data = load_dataset("digits-train").head(96)
    options = HardenOptions(out_dir=tmp_path, device="cpu", amp="off")
    result = train(model, recipe, DataSplit(data, data.head(16)), options, Distributed(), {})
    assert [h["epoch"] for h in result.history] == [1, 2] and recipe.finetuning() and recipe.cls_weight() == 1.0
    after = model.model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert any(not torch.equal(purifier_before[k], v) for k, v in model.purifier.state_dict().items())


@pytest.mark.parametrize("warmup, expected_best, selectable", [(0, 3, [3, 4]), (1, 4, [4])])
def test_best_is_chosen_among_the_finetuning_epochs_only_by_an_eot_monitor(tmp_path, warmup, expected_best, selectable):
    """A pre-training epoch with the highest held-out score must not ship (before: epoch 1 did, scored with one
    draw)."""
    from hardenctl.training import Monitor, Monitoring

    held_out_robust = iter([0.9, 0.8, 0.5, 0.3])  # epochs 1-2 pre-training (scored highest), 3-4 fine-tuning
    draws_seen = []

    class Scripted(Monitor):  # the recipe's monitor (its draws), with scripted numbers
        def score(self, model, data):
            draws_seen.append(self.draws)  # calls alternate: training images, then held-out images
            return (0.5, 0.5) if len(draws_seen) % 2 else (0.5, next(held_out_robust))

    recipe = load_recipe(
        "atop", {**SMALL, "warmup_epochs": warmup, "batch_size": 32, "monitor_n": 16, "augment": "none"}
    )
    scripted = Scripted.for_recipe(recipe, 0, Distributed())
    assert list(recipe.selectable_epochs()[0]) == selectable and recipe.monitor_eot() == 4
    model = recipe.prepare(digits_classifier())
    data = load_dataset("digits-train").head(96)
    # input scores given (the engine measures the input model before prepare): every monitor call below is an epoch's
    result = train(
        model,
        recipe,
        DataSplit(data.head(80), data.take(torch.arange(80, 96))),
        HardenOptions(out_dir=tmp_path, device="cpu", amp="off"),
        Distributed(),
        {},
        monitoring=Monitoring(scorer=scripted, input_scores=(None, None)),
    )
    assert result.best_epoch == expected_best and result.last_epoch == 4
    assert draws_seen == [4] * 8  # train and held-out monitors, every epoch, with EOT over monitor_eot draws


def test_without_finetuning_every_epoch_is_selectable_and_monitor_eot_is_configurable():
    recipe = load_recipe("atop", {**SMALL, "finetune_epochs": 0, "monitor_eot": 2})
    epochs, label = recipe.selectable_epochs()
    assert list(epochs) == [1, 2] and "pre-training-only" in label and recipe.monitor_eot() == 2
    with pytest.raises(UserError, match="monitor_eot=0 is out of range"):
        load_recipe("atop", {"monitor_eot": 0})


def test_prepare_draws_the_purifier_from_the_seed():
    recipe = load_recipe("atop", SMALL)
    first, again, other = (recipe.prepare(digits_classifier(), seed=s).purifier.state_dict() for s in (3, 3, 4))
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert all(not torch.equal(first[k], other[k]) for k in first if k.endswith("weight"))


# ---------------------------------------------------------------------------------------------
# end to end: harden → report → eval
# ---------------------------------------------------------------------------------------------
ATOP_ARGS = [
    "--recipe",
    "atop",
    "--data",
    "digits-train",
    "--eval-data",
    "digits-test",
    "--set",
    "pretrain_epochs=1",
    "--set",
    "finetune_epochs=1",
    "--set",
    "block=2",
    "--set",
    "width=8",
    "--set",
    "eps=0.1",
    "--set",
    "augment=none",
    "--set",
    "monitor_n=32",
    "--suite",
    "quick",
    "--eps",
    "0.1",
    "--eval-n",
    "16",
    "--device",
    "cpu",
    "--seed",
    "0",
]


@pytest.fixture(scope="module")
def atop_run(digits_model_path, tmp_path_factory):
    from hardenctl.cli import main

    out = tmp_path_factory.mktemp("atop") / "run"
    assert main(["harden", str(digits_model_path), *ATOP_ARGS, "--out", str(out), "--quiet"]) == 0
    return out


def test_harden_writes_one_composite_and_reports_classifier_composite_and_bpda(atop_run, digits_model_path):
    report = json.loads((atop_run / "report.json").read_text())
    before, after = report["input"], report["hardened"]
    assert not before["randomized"] and before["eot_samples"] == 1  # the bare classifier
    assert after["randomized"] and after["eot_samples"] == 20  # the composite, attacked end to end with EOT
    # the same attacks with the same settings, but for the EOT draws the composite's are averaged over
    assert [a.replace("eot_samples=20", "eot_samples=1") for a in after["attack_list"]] == before["attack_list"]
    assert all("eot_samples=20" in a for a in after["attack_list"]) and before["n"] == after["n"] == 16
    bpda = report["extra_evaluations"][BPDA_LABEL]
    assert "transferred" in bpda["attack_list"][0] and "optimistic" in bpda["extra"]["transferred"]["summary"]
    assert bpda["clean_accuracy"] == after["clean_accuracy"]  # same model, same seed: only the attacks differ
    assert after["extra"]["atop"]["classifier_bit_identical"] is True
    # the saved epoch was chosen among the fine-tuning epochs (pretrain 1 + finetune 1: epoch 2 only), scored with EOT
    assert report["selectable_epochs"] == [2] and report["monitor_eot"] == 4 and report["selected_epoch"] == 2
    assert "pre-training epochs excluded" in report["selectable"]
    markdown = (atop_run / "report.md").read_text()
    assert BPDA_LABEL in markdown and "EOT over 20 draws" in markdown and "bit-identical" in markdown
    assert "robust accuracy with EOT over 4 draws, among epoch 2 (AToP fine-tuning epochs only" in markdown
    model = load_model(atop_run / "model.safetensors")
    assert isinstance(model, PurifiedClassifier) and model.info.randomized
    plain, inside = load_model(digits_model_path).model.state_dict(), model.model.state_dict()
    assert plain.keys() == inside.keys() and all(torch.equal(v, inside[k]) for k, v in plain.items())


def test_eval_uses_eot_on_the_composite_and_fixed_mask_makes_it_deterministic(atop_run, cli):
    args = [
        "eval",
        atop_run / "model.safetensors",
        "--data",
        "digits-test",
        "--n",
        "16",
        "--attacks",
        "fgsm",
        "--eps",
        "0.1",
        "--eot-samples",
        "4",
        "--json",
    ]
    code, stdout, _ = cli(*args)
    report = json.loads(stdout)
    assert code == 0 and report["randomized"] and report["eot_samples"] == 4
    assert "fresh random draw" in report["extra"]["purifier"]["summary"]
    code, stdout, _ = cli(*args, "--fixed-mask")
    fixed = json.loads(stdout)
    assert (
        code == 0
        and not fixed["randomized"]
        and fixed["eot_samples"] == 1
        and fixed["extra"]["purifier"]["fixed_mask_seed"] == 0
    )
    assert "FIXED noise and mask" in fixed["extra"]["purifier"]["summary"]


@pytest.mark.parametrize(
    "extra, named",
    [
        (["--epochs", "2"], ["epochs=2 cannot be set", "pretrain_epochs and finetune_epochs"]),
        (["--set", "gan_weight=1"], ["gan_weight=1 is not implemented"]),
        (["--set", "attack_steps=3"], ["attack_steps=3"]),
        (["--set", "block=9"], ["block=9 is larger than the 8x8 images"]),
    ],
)
def test_bad_atop_input_is_one_line_exit_2_and_writes_nothing(cli, digits_model_path, tmp_path, extra, named):
    out = tmp_path / "out"
    code, stdout, err = cli(
        "harden", digits_model_path, "--recipe", "atop", "--data", "digits-train", "--out", out, *extra
    )
    assert code == 2 and stdout == "" and err.strip().count("\n") == 0 and "Traceback" not in err, err
    assert all(fragment in err for fragment in named), err
    assert not out.exists()


def test_fixed_mask_on_a_plain_model_is_a_usage_error(cli, digits_model_path):
    code, _, err = cli("eval", digits_model_path, "--data", "digits-test", "--n", "4", "--fixed-mask")
    assert code == 2 and "--fixed-mask applies only to a model with a random transform" in err


def test_info_on_a_composite_shows_the_purifier_and_counts_its_parameters(atop_run, cli):
    code, stdout, _ = cli("info", atop_run / "model.safetensors")
    assert code == 0 and "AToP purifier at the input" in stdout and "inserted modules: none" not in stdout
    model = load_model(atop_run / "model.safetensors")
    purifier = sum(p.numel() for p in model.purifier.parameters())
    assert f"+ {purifier:,} inserted" in stdout
