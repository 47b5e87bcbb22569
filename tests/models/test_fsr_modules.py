"""FSR surgery on timm families: shapes, parameter counts, save → load, `info`, evaluation through the module."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

import hardenctl
from hardenctl.attacks import PGD
from hardenctl.data import load_dataset
from hardenctl.errors import UserError
from hardenctl.models import create_timm_model, load_model, save_model, wrap_model
from hardenctl.models.fsr import FSRModule, FSRStage, fsr_modules, fsr_stages
from hardenctl.models.info import describe_lines, describe_model
from hardenctl.recipes import load_recipe

# (arch, its feature_info stages, channels of the last one)
FAMILIES = [
    ("test_resnet", ["act1", "layer1", "layer2", "layer3", "layer4"], 96),
    ("test_efficientnet", ["blocks.0", "blocks.1", "blocks.2", "blocks.3", "blocks.4"], 64),
    ("test_convnext", ["stages.0", "stages.1", "stages.2", "stages.3"], 64),
]
CLASSES, HIDDEN = 10, 16


def plain_model(arch: str):
    torch.manual_seed(0)
    net = create_timm_model(arch, num_classes=CLASSES)
    return wrap_model(net, arch, CLASSES, (0.49, 0.48, 0.45), (0.25, 0.24, 0.26), input_size=(32, 32)).eval()


def fsr_model(arch: str, **overrides):
    recipe = load_recipe("fsr", {"hidden": HIDDEN, **overrides})
    return recipe.prepare(plain_model(arch)).eval(), recipe


def fsr_parameters(channels: int, hidden: int = HIDDEN, classes: int = CLASSES) -> int:
    """Two conv nets C→h→h→C (3×3, no bias; BN weight + bias after the first two) and one Linear(C, classes)."""
    conv_net = 9 * channels * hidden + 2 * hidden + 9 * hidden * hidden + 2 * hidden + 9 * hidden * channels
    return 2 * conv_net + channels * classes + classes


def images(n: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("arch, stages, channels", FAMILIES)
def test_insertion_keeps_logits_only_the_output_shape_and_adds_the_expected_parameters(arch, stages, channels):
    before = plain_model(arch)
    n_before = count(before)
    model, _ = fsr_model(arch)
    assert fsr_stages(model.model) == stages
    assert isinstance(model.model.get_submodule(stages[-1]), FSRStage)  # default: the last feature stage
    assert model.info.metadata["fsr"] == {
        "format": 1,
        "stages": [stages[-1]],
        "channels": [channels],
        "hidden": HIDDEN,
        "tau": 0.1,
    }
    (module,) = fsr_modules(model)
    assert count(module) == fsr_parameters(channels)
    assert count(model) == n_before + fsr_parameters(channels)
    out = model(images())
    assert isinstance(out, torch.Tensor) and out.shape == (4, CLASSES)


@pytest.mark.parametrize("arch, stages, channels", FAMILIES)
def test_zero_initialised_recalibration_leaves_the_backbone_unchanged(arch, stages, channels):
    x = images()
    with torch.no_grad():
        expected = plain_model(arch)(x)
        model, _ = fsr_model(arch, zero_init_recalibration=True)
        torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("arch, stages, channels", FAMILIES)
def test_save_then_load_gives_identical_logits_with_the_modules_in_place(arch, stages, channels, tmp_path):
    model, recipe = fsr_model(arch, stages=stages[-2:])
    model.train()  # move BN statistics off their defaults so the comparison means something
    x = images(8, seed=1)
    recipe.loss(model, x, torch.arange(8) % CLASSES, x).backward()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    model.eval()
    path = save_model(model, tmp_path / "model.safetensors")
    with safe_open(str(path), framework="pt") as fh:
        extra = json.loads(fh.metadata()["hardenctl"])
        keys = list(fh.keys())
    assert extra["fsr"]["stages"] == stages[-2:]
    assert any(k.startswith(f"{stages[-1]}.fsr.separation.") for k in keys)
    assert any(k.startswith(f"{stages[-1]}.stage.") for k in keys)

    loaded = hardenctl.load_model(path)  # the public API; no flags
    assert isinstance(loaded, torch.nn.Module) and not loaded.training
    assert [type(loaded.model.get_submodule(s)) for s in stages[-2:]] == [FSRStage, FSRStage]
    assert all(not m.training for m in fsr_modules(loaded))  # the deterministic mask
    x = images(6, seed=2)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
        assert torch.equal(loaded(x), loaded(x))
    assert loaded.info.metadata["fsr"] == model.info.metadata["fsr"]


def test_several_stages_are_inserted_in_network_order_and_re_preparing_keeps_them():
    model, recipe = fsr_model("test_resnet", stages="layer4,layer2")
    assert model.info.metadata["fsr"]["stages"] == ["layer2", "layer4"]
    assert model.info.metadata["fsr"]["channels"] == [48, 96]
    modules = fsr_modules(model)
    recipe.prepare(model)  # e.g. hardening an FSR model again: nothing is added twice
    assert fsr_modules(model) == modules
    with pytest.raises(UserError, match=r"stage layer4 already has an FSR module with hidden=16.*--set hidden=16"):
        load_recipe("fsr", {"stages": ["layer4"], "hidden": 32}).prepare(model)


def test_prepare_draws_the_modules_from_the_seed_and_leaves_the_global_rng_alone():
    def modules(seed: int) -> dict[str, torch.Tensor]:
        model = plain_model("test_resnet")
        recipe = load_recipe("fsr", {"hidden": HIDDEN, "stages": ["layer3", "layer4"]})
        torch.manual_seed(1)
        prepared = recipe.prepare(model, seed=seed)
        assert torch.equal(
            torch.rand(3), torch.rand(3, generator=torch.Generator().manual_seed(1))
        )  # global RNG untouched
        return {k: v for k, v in prepared.state_dict().items() if ".fsr." in k}

    first, again, other = modules(5), modules(5), modules(6)
    weights = [k for k in first if k.endswith("weight") and first[k].dim() > 1]
    assert len(weights) == 2 * 7 and first.keys() == other.keys()  # per module: 3 + 3 convs and the head
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert all(not torch.equal(first[k], other[k]) for k in weights)


def test_a_network_without_feature_info_is_a_clear_error():
    model = wrap_model(
        torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten()), "custom", CLASSES, (0.5,), (0.5,)
    )
    with pytest.raises(UserError, match="has no timm feature_info"):
        load_recipe("fsr").prepare(model)


@pytest.mark.parametrize(
    "fsr_meta, named",
    [
        ({"stages": ["layer9"], "hidden": 16, "tau": 0.1}, "unknown FSR stage 'layer9'"),
        ({"stages": "layer4", "hidden": 16, "tau": 0.1}, "FSR metadata is malformed"),
        ({"stages": ["layer4"], "hidden": 16, "tau": -1}, "FSR metadata is malformed"),
        ({"stages": ["layer4"], "channels": [512], "hidden": 16, "tau": 0.1}, "do not fit this network"),
        ({"format": 9, "stages": ["layer4"], "hidden": 16, "tau": 0.1}, "format 9"),
    ],
)
def test_bad_fsr_metadata_is_a_one_line_error_on_load(tmp_path, fsr_meta, named):
    model, _ = fsr_model("test_resnet")
    model.info.metadata["fsr"] = fsr_meta
    path = save_model(model, tmp_path / "bad.safetensors")
    with pytest.raises(UserError) as err:
        load_model(path)
    assert named in str(err.value) and "\n" not in str(err.value)


def test_input_gradient_flows_through_the_module_in_eval_mode():
    model, _ = fsr_model("test_efficientnet")
    module = fsr_modules(model)[0]
    seen = {}

    def keep_gradient(_module, inputs, output):
        output.register_hook(
            lambda grad: seen.__setitem__("out", grad)
        )  # (a hook returning a tensor would replace the gradient)
        inputs[0].register_hook(lambda grad: seen.__setitem__("in", grad))

    module.register_forward_hook(keep_gradient)
    x = images(4).requires_grad_(True)
    model(x).logsumexp(1).sum().backward()
    assert seen["out"].abs().sum() > 0 and seen["in"].abs().sum() > 0
    assert x.grad is not None and (x.grad.flatten(1).abs().sum(1) > 0).all()
    # the module is on the gradient's path: changing R changes the input gradient
    grad = x.grad.clone()
    with torch.no_grad():
        module.recalibration[-1].weight.mul_(10)
    x.grad = None
    model(x).logsumexp(1).sum().backward()
    assert (grad - x.grad).abs().max() > 1e-3 * grad.abs().max()


def test_pgd_attacks_the_whole_network_without_masked_gradients():
    model, _ = fsr_model("test_resnet")
    x = images(8, seed=3)
    with torch.no_grad():
        y = model(x).argmax(1)  # all "correct" before the attack
    attack = PGD(8 / 255, steps=5)
    x_adv = attack(model, x, y)
    assert attack.gradient_stats.zero == 0 and attack.gradient_stats.nonfinite == 0
    assert not model.training and all(not m.training for m in fsr_modules(model))
    assert (x_adv - x).abs().max() <= 8 / 255 + 1e-6
    with torch.no_grad():
        assert (model(x_adv).argmax(1) != y).any()


def test_describe_model_shows_the_architecture_the_modules_and_their_parameters(tmp_path):
    model, _ = fsr_model("test_resnet", stages=["layer3", "layer4"])
    model.info.metadata.update({"recipe": "fsr", "epoch": 3, "selected": "best"})
    path = save_model(model, tmp_path / "model.safetensors")
    d = describe_model(path)
    assert (d["arch"], d["num_classes"], d["in_chans"], d["input_size"]) == ("test_resnet", CLASSES, 3, [32, 32])
    assert d["normalization"]["mean"] == [0.49, 0.48, 0.45] and d["normalization"]["source"] == "checkpoint"
    assert [(m["stage"], m["channels"], m["parameters"]) for m in d["inserted_modules"]] == [
        ("layer3", 192, fsr_parameters(192)),
        ("layer4", 96, fsr_parameters(96)),
    ]
    assert d["inserted_modules"][0]["parts"]["aux_head"] == 192 * CLASSES + CLASSES
    assert d["parameters"]["inserted"] == fsr_parameters(192) + fsr_parameters(96)
    assert d["parameters"]["total"] == d["parameters"]["backbone"] + d["parameters"]["inserted"] == count(model)
    assert d["parameters"]["backbone"] == count(plain_model("test_resnet"))
    assert d["recipe"]["recipe"] == "fsr" and "fsr" not in d["recipe"]
    text = "\n".join(describe_lines(d))
    assert "fsr after layer4: 96 channels, hidden 16, tau 0.1" in text and "trained with: fsr (epoch 3, best)" in text
    plain = describe_model(save_model(plain_model("test_convnext"), tmp_path / "plain.safetensors"))
    assert plain["inserted_modules"] == [] and plain["parameters"]["inserted"] == 0


def test_harden_with_fsr_writes_a_model_that_eval_loads_without_flags(tmp_path, cli):
    """`harden --recipe fsr` end to end (tiny: 1 epoch on 256 digits), then `hardenctl eval` on the result."""
    torch.manual_seed(0)
    net = create_timm_model("test_resnet", num_classes=10, in_chans=1)
    source = save_model(
        wrap_model(net, "test_resnet", 10, (0.5,), (0.5,), in_chans=1, input_size=(8, 8)), tmp_path / "in.safetensors"
    )
    result = hardenctl.api.harden(
        source,
        data=load_dataset("digits-train").head(256),
        eval_data=load_dataset("digits-test").head(48),
        out_dir=tmp_path / "out",
        recipe="fsr",
        overrides={
            "epochs": 1,
            "batch_size": 64,
            "attack_steps": 2,
            "eps": 0.1,
            "attack_alpha": 0.05,
            "monitor_n": 32,
            "augment": "none",
            "lr": 0.02,
            "stages": ["layer3", "layer4"],
        },
        eval_n=48,
        device="cpu",
        eval_options={"suite": "quick", "eps": 0.1, "apgd_steps": 5, "large_eps_samples": 16},
    )
    with safe_open(str(result.model_path), framework="pt") as fh:
        extra = json.loads(fh.metadata()["hardenctl"])
    assert extra["recipe"] == "fsr" and extra["fsr"]["stages"] == ["layer3", "layer4"]
    assert result.report.hardened.randomized is False  # the eval mask is deterministic: no EOT needed
    loaded = hardenctl.load_model(result.model_path)
    assert len(fsr_modules(loaded)) == 2 and all(isinstance(m, FSRModule) for m in fsr_modules(loaded))
    code, stdout, _ = cli(
        "eval", result.model_path, "--data", "digits-test", "--n", "24", "--attacks", "fgsm", "--eps", "0.1", "--json"
    )
    assert code == 0 and json.loads(stdout)["n"] == 24
    code, stdout, _ = cli("info", result.model_path)
    assert code == 0 and "fsr after layer3" in stdout and "fsr after layer4" in stdout
    code, stdout, _ = cli("info", result.model_path, "--json")
    assert code == 0 and [m["stage"] for m in json.loads(stdout)["inserted_modules"]] == ["layer3", "layer4"]
