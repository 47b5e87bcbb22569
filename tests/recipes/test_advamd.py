"""AdvAmd (our design, RECIPES.md): mediate samples, learning ratio, auxiliary-BN routing, zero weights, export."""

from __future__ import annotations

import copy
import math

import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import nn

from hardenctl import api
from hardenctl.errors import UserError
from hardenctl.models import create_timm_model
from hardenctl.models.aux_bn import bn_route, dual_bn_layers
from hardenctl.recipes import load_recipe
from hardenctl.recipes.advamd import AdvAmd, AdvAmdConfig, learning_ratio, mediate_samples


def recipe(**values) -> AdvAmd:
    return AdvAmd(AdvAmdConfig.from_mapping(values, "test"))


def net() -> nn.Module:
    torch.manual_seed(0)
    return create_timm_model("test_resnet", num_classes=4, in_chans=3)


def batch(n: int = 6):
    torch.manual_seed(1)
    x = torch.rand(n, 3, 16, 16)
    x_adv = (x + (torch.rand_like(x) * 2 - 1) * 2 / 255).clamp(0, 1)
    return x, torch.arange(n) % 4, x_adv


def test_mediate_samples_lie_between_x_and_x_adv():
    x, _, x_adv = batch()
    for level in (0.0, 1 / 3, 2 / 3, 1.0):
        m = mediate_samples(x, x_adv, level)
        assert torch.all(m >= torch.minimum(x, x_adv) - 1e-7) and torch.all(m <= torch.maximum(x, x_adv) + 1e-7)
    assert torch.equal(mediate_samples(x, x_adv, 0.0), x)
    assert torch.allclose(mediate_samples(x, x_adv, 1.0), x_adv)
    assert torch.allclose(mediate_samples(x, x_adv, 0.5), (x + x_adv) / 2)


def test_learning_ratio_forms():
    logits_adv, logits = torch.randn(5, 3), torch.randn(5, 3)
    y = torch.tensor([0, 1, 2, 0, 1])
    assert torch.allclose(learning_ratio("p_true", logits_adv, logits, y), F.softmax(logits_adv, 1)[torch.arange(5), y])
    gap = learning_ratio("loss_gap", logits_adv, logits, y)
    expected = torch.exp(
        -(F.cross_entropy(logits_adv, y, reduction="none") - F.cross_entropy(logits, y, reduction="none")).clamp(min=0)
    )
    assert torch.allclose(gap, expected)
    # by hand: p_y falls from 1/3 to 1/6 (logit log 0.4 against two 0s), so the CE gap is log 2 and the ratio 1/2
    halved = learning_ratio("loss_gap", torch.tensor([[math.log(0.4), 0.0, 0.0]]), torch.zeros(1, 3), torch.tensor([0]))
    assert halved.item() == pytest.approx(0.5, rel=1e-6)
    assert torch.equal(
        learning_ratio("loss_gap", logits, logits, y), torch.ones(5)
    )  # the attack changed nothing: full ratio
    assert torch.equal(learning_ratio("none", logits_adv, logits, y), torch.ones(5))
    logits_adv.requires_grad_(True)
    assert not learning_ratio("p_true", logits_adv, logits, y).requires_grad  # a weight, not a training signal


def test_zero_amendment_weights_give_exactly_a_clean_fine_tune_step():
    x, y, x_adv = batch()
    plain, amended = net().train(), net().train()
    r = recipe(w_mediate=0, w_adv=0)
    r.prepare(amended)
    assert r.aux_bn_layers == 0 and not dual_bn_layers(amended)  # no twins without a gradient (DDP would refuse them)
    assert "clean fine-tune" in r.report_extra(amended, amended)["advamd"]["summary"]
    opt_plain = torch.optim.SGD(plain.parameters(), lr=0.1, momentum=0.9)
    opt_amended = torch.optim.SGD([p for n, p in amended.named_parameters() if ".aux." not in n], lr=0.1, momentum=0.9)
    F.cross_entropy(plain(x), y).backward()
    r.loss(amended, x, y, x_adv).backward()
    opt_plain.step(), opt_amended.step()
    exported = r.export(copy.deepcopy(amended)).state_dict()
    assert list(exported) == list(plain.state_dict())  # the same keys in the same order, so nothing is skipped below
    for name, a in plain.state_dict().items():
        assert torch.equal(a, exported[name]), name
    assert all(int(m.aux.num_batches_tracked) == 0 for m in dual_bn_layers(amended))


def test_the_loss_routes_benign_through_main_and_amendment_batches_through_aux_bn():
    x, y, x_adv = batch()
    model = net().train()
    r = recipe()
    assert r.prepare(model) is model and r.aux_bn_layers > 0
    loss = r.loss(model, x, y, x_adv)
    loss.backward()
    layers = dual_bn_layers(model)
    assert all(int(m.main.num_batches_tracked) == 1 and int(m.aux.num_batches_tracked) == 1 for m in layers)
    assert any(m.aux.weight.grad is not None and m.aux.weight.grad.abs().sum() > 0 for m in layers)
    # the value is the formula of the docstring, written out
    with torch.no_grad():
        check = net().train()
        r2 = recipe()
        r2.prepare(check)
        logits = check(x)
        with bn_route(check, "aux"):
            *mediate, adv = check(torch.cat([mediate_samples(x, x_adv, lv) for lv in (1 / 3, 2 / 3)] + [x_adv])).split(
                len(x)
            )
        v = F.softmax(adv, 1)[torch.arange(len(x)), y]
        expected = (
            F.cross_entropy(logits, y)
            + sum(0.5 * (v * F.cross_entropy(m, y, reduction="none")).mean() for m in mediate)
            + 0.5 * (v * F.cross_entropy(adv, y, reduction="none")).mean()
        )
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_the_training_attack_sees_the_auxiliary_bn():
    model = net()
    r = recipe()
    r.prepare(model)
    model.train()
    with bn_route(model, "aux"):
        model(torch.rand(8, 3, 16, 16) * 4)  # auxiliary statistics now differ from the main ones
    model.eval()
    x = torch.rand(2, 3, 16, 16)
    with r.attack_context(model):
        inside = model(x)
    assert not torch.allclose(inside, model(x))
    with bn_route(model, "aux"):
        assert torch.equal(inside, model(x))


def test_a_model_without_batchnorm_runs_and_says_aux_bn_does_not_apply():
    torch.manual_seed(0)
    vit_like = nn.Sequential(nn.Flatten(), nn.LayerNorm(3 * 16 * 16), nn.Linear(3 * 16 * 16, 4))
    r = recipe()
    r.prepare(vit_like)
    x, y, x_adv = batch()
    assert torch.isfinite(r.loss(vit_like, x, y, x_adv))
    summary = r.report_extra(vit_like, vit_like)["advamd"]["summary"]
    assert "does not apply" in summary and "no BatchNorm" in summary


def test_bad_parameters_are_one_line_errors():
    for values in ({"levels": [0.5, 1.5]}, {"vulnerability": "entropy"}, {"w_adv": -1}, {"aux_bn": "yes"}):
        with pytest.raises(UserError):
            load_recipe("advamd", values)


def test_harden_with_advamd_exports_the_input_architecture_and_reports_clean_accuracy_first(
    tmp_path, digits_model_path, cli
):
    out = tmp_path / "out"
    code, stdout, _ = cli(
        "harden",
        digits_model_path,
        "--recipe",
        "advamd",
        "--data",
        "digits-train",
        "--eval-data",
        "digits-test",
        "--out",
        out,
        "--epochs",
        "1",
        "--eval-n",
        "32",
        "--suite",
        "quick",
        "--eps",
        "0.1",
        "--set",
        "batch_size=64",
        "--set",
        "monitor_n=64",
        "--quiet",
    )
    assert code == 0
    with safe_open(str(out / "model.safetensors"), "pt") as fh, safe_open(str(digits_model_path), "pt") as ref:
        assert sorted(fh.keys()) == sorted(ref.keys())  # no auxiliary BN left
        state = {k: fh.get_tensor(k) for k in fh.keys()}
    plain = timm.create_model("test_resnet", num_classes=10, in_chans=1)
    plain.load_state_dict(state)  # strict: the input architecture, loadable in plain timm
    report = (out / "report.md").read_text()
    assert report.split("\n\n")[1].startswith("**Clean accuracy")  # the headline leads with clean accuracy
    data = api.load_model(out / "model.safetensors")
    assert not dual_bn_layers(data)
    import json

    saved = json.loads((out / "report.json").read_text())
    assert saved["selected_by"] == "clean" and "auxiliary BN on" in saved["hardened"]["extra"]["advamd"]["summary"]
    assert saved["hardened"]["robust_accuracy"] is not None and saved["interpretation"].startswith("ours")


def test_a_vit_without_batchnorm_hardens_and_the_cli_says_aux_bn_does_not_apply(tmp_path, cli):
    import numpy as np

    from hardenctl.models import save_model, wrap_model

    torch.manual_seed(0)
    vit = create_timm_model("test_vit", num_classes=4, in_chans=3, input_size=(32, 32))
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in vit.modules())
    path = save_model(
        wrap_model(vit, "test_vit", 4, (0.5,) * 3, (0.5,) * 3, input_size=(32, 32)), tmp_path / "vit.safetensors"
    )
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "data.npz", x=rng.integers(0, 256, (96, 32, 32, 3), dtype=np.uint8), y=np.arange(96) % 4)
    code, _, err = cli(
        "harden",
        path,
        "--recipe",
        "advamd",
        "--data",
        tmp_path / "data.npz",
        "--eval-data",
        tmp_path / "data.npz",
        "--out",
        tmp_path / "out",
        "--epochs",
        "1",
        "--eval-n",
        "8",
        "--suite",
        "quick",
        "--set",
        "batch_size=32",
        "--set",
        "monitor_n=8",
        "--set",
        "attack_steps=1",
    )
    assert code == 0
    lines = [line for line in err.splitlines() if "auxiliary BN does not apply" in line]
    assert len(lines) == 1
    with safe_open(str(tmp_path / "out" / "model.safetensors"), "pt") as fh, safe_open(str(path), "pt") as ref:
        assert sorted(fh.keys()) == sorted(ref.keys())
