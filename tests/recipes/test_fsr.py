"""FSR: the module's properties RECIPES.md lists, the loss (formula, y' ≠ y, λ = 0 → base loss), the config."""

from __future__ import annotations

import contextlib
import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from hardenctl.errors import UserError
from hardenctl.models import create_timm_model, wrap_model
from hardenctl.models.fsr import FSRModule, gumbel_sigmoid_mask
from hardenctl.recipes import REGISTRY, describe, load_recipe, recipe_path, yaml_comments
from hardenctl.recipes.fsr import Fsr
from hardenctl.recipes.mart import Mart, strongest_wrong_class
from hardenctl.recipes.pgd_at import PGDAT
from hardenctl.recipes.trades import Trades
from hardenctl.training import TrainingPGD, training_step

C, K, HIDDEN = 12, 7, 16


def features(seed: int, n: int = 4, channels: int = C, size: int = 5) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.relu(torch.randn(n, channels, size, size, generator=g)) * 2


def fsr_module(seed: int = 0, tau: float = 0.1) -> FSRModule:
    torch.manual_seed(seed)
    return FSRModule(C, K, hidden=HIDDEN, tau=tau)


def fsr_model(base: str = "pgd-at", **overrides):
    """timm test_resnet (3×16×16 inputs, 10 classes) with an FSR module after layer4."""
    torch.manual_seed(0)
    net = create_timm_model("test_resnet", num_classes=10)
    model = wrap_model(net, "test_resnet", 10, (0.5,) * 3, (0.25,) * 3, input_size=(16, 16))
    recipe = load_recipe("fsr", {"base": base, "hidden": 16, **overrides})
    return recipe.prepare(model), recipe


def batch(seed: int = 0, n: int = 8):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 16, 16, generator=g)
    return x, torch.randint(0, 10, (n,), generator=g), (x + 0.03 * torch.randn(x.shape, generator=g)).clamp(0, 1)


# ---------------------------------------------------------------------------------------------
# the module
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("training", [True, False])
def test_separation_decomposes_the_feature_and_the_mask_is_soft(training):
    module = fsr_module().train(training)
    f = features(1)
    parts = module.separate(f)
    torch.testing.assert_close(parts.robust + parts.non_robust, f, rtol=0, atol=1e-6)  # f⁺ + f⁻ = f
    torch.testing.assert_close(parts.robust, parts.mask * f)
    assert parts.mask.shape == f.shape and ((parts.mask >= 0) & (parts.mask <= 1)).all()
    assert ((parts.mask > 0.01) & (parts.mask < 0.99)).any()  # soft, not binarised
    recal = module.recalibration(parts.non_robust) * (1 - parts.mask)
    torch.testing.assert_close(parts.recalibrated, parts.non_robust + recal)
    torch.testing.assert_close(module(f) if not training else parts.output, parts.robust + parts.recalibrated)


@pytest.mark.parametrize("training", [True, False])
def test_zero_last_recalibration_conv_makes_the_module_the_identity(training):
    module = fsr_module().train(training)
    torch.nn.init.zeros_(module.recalibration[-1].weight)
    f = features(2)
    out = module(f)
    assert out.shape == f.shape
    torch.testing.assert_close(out, f, rtol=0, atol=1e-6)


def test_eval_mask_is_deterministic_and_equals_the_closed_form():
    module = fsr_module(tau=0.1).eval()
    f = features(3)
    m1, m2 = module.mask(f), module.mask(f)
    assert torch.equal(m1, m2)
    s = torch.sigmoid(module.separation(f).double())
    closed = s**10 / (s**10 + (1 - s) ** 10)  # s^{1/τ} / (s^{1/τ} + (1−s)^{1/τ})
    torch.testing.assert_close(m1.double(), closed, rtol=1e-5, atol=1e-6)
    out1, out2 = module(f), module(f)
    assert torch.equal(out1, out2) and module.pop_parts() is None  # eval passes keep nothing


def official_eval_mask(s: torch.Tensor, tau: float) -> torch.Tensor:
    """The official GumbelSigmoid in eval mode, rewritten: noise 0.5 on both sides, 1e-8 guards, softmax of the pair."""
    d = 1e-8
    g = -torch.log(-torch.log(torch.tensor(0.5 + d, dtype=s.dtype)) + d)
    pair = torch.stack([torch.log(s + d) + g, torch.log(1 - s + d) + g]) / (tau + d)
    return torch.softmax(pair, dim=0)[0]


def test_eval_mask_matches_the_official_formula_away_from_saturation():
    logits = torch.linspace(-6, 6, 241, dtype=torch.float64)
    for tau in (0.1, 0.5, 1.0):
        ours = gumbel_sigmoid_mask(logits, tau, stochastic=False).double()
        torch.testing.assert_close(ours, official_eval_mask(torch.sigmoid(logits), tau), rtol=1e-5, atol=1e-6)


def test_training_mask_is_a_gumbel_sigmoid_sample():
    """P(m > 1/2) = s for the logistic (Gumbel − Gumbel) noise; the mask varies between passes."""
    torch.manual_seed(0)
    logits = torch.tensor([-1.5, 0.0, 0.7, 2.0]).repeat(20000, 1)
    mask = gumbel_sigmoid_mask(logits, 0.1, stochastic=True)
    torch.testing.assert_close((mask > 0.5).float().mean(0), torch.sigmoid(logits[0]), rtol=0, atol=0.015)
    assert not torch.equal(mask, gumbel_sigmoid_mask(logits, 0.1, stochastic=True))
    module = fsr_module().train()
    f = features(4)
    assert not torch.equal(module(f), module(f))


def test_a_deep_copy_after_a_training_pass_keeps_no_graph():
    module = fsr_module().train()
    module(features(5).requires_grad_(True))
    clone = copy.deepcopy(module)
    assert clone.pop_parts() is None and module.pop_parts() is not None


def test_features_of_the_wrong_shape_are_a_clear_error():
    module = fsr_module()
    with pytest.raises(UserError, match=r"12-channel N×C×H×W features received shape \(2, 5, 5, 12\)"):
        module(torch.rand(2, 5, 5, 12))


# ---------------------------------------------------------------------------------------------
# the loss
# ---------------------------------------------------------------------------------------------
def test_strongest_wrong_class_is_never_the_label():
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(400, 10, generator=g)
    y = torch.randint(0, 10, (400,), generator=g)
    y[:200] = logits[:200].argmax(1)
    y_wrong = strongest_wrong_class(logits, y)
    assert (y_wrong != y).all()
    top2 = logits.topk(2, dim=1).indices
    assert torch.equal(y_wrong, torch.where(top2[:, 0] == y, top2[:, 1], top2[:, 0]))


def test_loss_is_the_papers_formula_with_y_prime_the_strongest_wrong_class():
    model, recipe = fsr_model(lambda_sep=0.5, lambda_rec=2.0)
    model.train()
    x, y, x_adv = batch(1)
    torch.manual_seed(7)
    loss = recipe.loss(model, x, y, x_adv)

    torch.manual_seed(7)  # the same Gumbel noise
    logits_adv = model(x_adv)
    module = model.model.layer4.fsr
    parts = module.pop_parts()
    order = logits_adv.argsort(dim=1, descending=True)
    y_wrong = torch.where(order[:, 0] == y, order[:, 1], order[:, 0])
    assert (y_wrong != y).all()

    def head(f):  # the one shared auxiliary head, after global average pooling
        return module.head(f.mean(dim=(2, 3)))

    expected = (
        F.cross_entropy(logits_adv, y)
        + 0.5 * (F.cross_entropy(head(parts.robust), y) + F.cross_entropy(head(parts.non_robust), y_wrong))
        + 2.0 * F.cross_entropy(head(parts.recalibrated), y)
    )
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("base, reference", [("pgd-at", PGDAT), ("trades", Trades), ("mart", Mart)])
def test_lambda_zero_reduces_to_the_base_loss(base, reference):
    model, recipe = fsr_model(base, lambda_sep=0, lambda_rec=0, beta=3.0)
    model.train()
    x, y, x_adv = batch(2)
    torch.manual_seed(3)
    ours = recipe.loss(model, x, y, x_adv)
    theirs_recipe = reference(reference.Config(beta=3.0)) if base != "pgd-at" else reference()
    torch.manual_seed(3)
    theirs = theirs_recipe.loss(model, x, y, x_adv)
    assert torch.equal(ours, theirs)
    torch.manual_seed(3)
    with_terms = Fsr(dataclasses.replace(recipe.config, lambda_sep=1.0, lambda_rec=1.0)).loss(model, x, y, x_adv)
    assert with_terms > ours  # the auxiliary CE terms are positive


def test_every_fsr_parameter_gets_a_gradient():
    model, recipe = fsr_model()
    model.train()
    x, y, x_adv = batch(3)
    recipe.loss(model, x, y, x_adv).backward()
    module = model.model.layer4.fsr
    for name, p in module.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("base, attack_passes, loss_passes", [("pgd-at", 3, 1), ("trades", 4, 2), ("mart", 3, 2)])
def test_training_attack_uses_the_eval_mask_and_the_loss_the_training_mask(base, attack_passes, loss_passes):
    model, recipe = fsr_model(base, attack_steps=3, eps=0.05, attack_alpha=0.02)
    model.train()
    modes = []
    model.model.layer4.fsr.register_forward_pre_hook(lambda module, args: modes.append(module.training))
    x, y, _ = batch(4)
    loss = training_step(model, model, recipe, TrainingPGD.for_recipe(recipe), x, y, contextlib.nullcontext)
    assert modes == [False] * attack_passes + [True] * loss_passes
    assert loss.requires_grad and model.training


def test_trades_base_attacks_the_kl():
    model, recipe = fsr_model("trades")
    model.eval()
    x, y, x_adv = batch(5)
    loss_fn = recipe.attack_loss(model, x, y)
    with torch.no_grad():
        torch.testing.assert_close(loss_fn(model(x), y), torch.zeros(len(y)), rtol=0, atol=1e-6)
        assert loss_fn(model(x_adv), y).sum() > 0
    _, pgd_recipe = fsr_model("pgd-at")
    with torch.no_grad():
        torch.testing.assert_close(
            pgd_recipe.attack_loss(model, x, y)(model(x), y), F.cross_entropy(model(x), y, reduction="none")
        )


# ---------------------------------------------------------------------------------------------
# the recipe file and config
# ---------------------------------------------------------------------------------------------
def test_the_recipe_file_documents_every_key_and_has_the_papers_defaults():
    assert REGISTRY["fsr"] is Fsr
    cls, parameters = describe("fsr")
    text = recipe_path("fsr").read_text()
    sections = yaml_comments(recipe_path("fsr"))  # common keys, then the paper and finetune profiles
    for field in dataclasses.fields(cls.Config):
        assert field.name in sections[""] or all(field.name in sections[p] for p in ("paper", "finetune")), (
            f"fsr.yaml lacks {field.name}"
        )
    assert all(p.meaning for p in parameters), [p.key for p in parameters if not p.meaning]
    c = load_recipe("fsr", {"profile": "paper"}).config
    assert (c.stages, c.tau, c.lambda_sep, c.lambda_rec, c.base, c.hidden) == (("last",), 0.1, 1.0, 1.0, "pgd-at", 64)
    assert c.eps == pytest.approx(8 / 255) and c.attack_alpha == pytest.approx(2 / 255)
    assert (c.attack_steps, c.attack_start, c.augment, c.crop_padding) == (
        10,
        "uniform",
        "auto",
        4,
    )  # auto: crop-flip at 32 px, as the paper
    assert (c.lr, c.momentum, c.weight_decay, c.epochs, c.batch_size) == (0.1, 0.9, 5e-4, 100, 128)
    assert [max(1, round(m * c.epochs)) + 1 for m in c.milestones] == [75, 90]  # 1-based epochs of the lr drops
    assert "[ours]" in text and Fsr.interpretation


@pytest.mark.parametrize(
    "value, expected",
    [
        ("layer4", ("layer4",)),
        ("layer3, layer4", ("layer3", "layer4")),
        (["layer3", "layer4"], ("layer3", "layer4")),
        ("last", ("last",)),
    ],
)
def test_stages_accept_a_list_or_a_comma_separated_string(value, expected):
    config = load_recipe("fsr", {"stages": value}).config
    assert config.stages == expected
    assert load_recipe("fsr", {"stages": list(expected)}).config.to_dict()["stages"] == list(expected)


@pytest.mark.parametrize(
    "overrides, named",
    [
        ({"stages": [4]}, "stages=[4] is not a list of stage names"),
        ({"stages": []}, "empty or malformed"),
        ({"stages": "layer3,,layer4"}, "empty or malformed"),
        ({"base": "fgsm"}, "base='fgsm' is not a valid choice; use one of pgd-at, trades, mart"),
        ({"tau": 0}, "tau=0 is out of range; tau must be > 0"),
        ({"hidden": 0}, "hidden=0 is out of range"),
        ({"lambda_sep": -1}, "lambda_sep=-1 is out of range"),
        ({"stage": "layer4"}, "unknown parameter 'stage'"),
    ],
)
def test_bad_values_are_one_line_errors(overrides, named):
    with pytest.raises(UserError) as err:
        load_recipe("fsr", overrides)
    assert named in str(err.value) and "\n" not in str(err.value)


def test_an_unknown_stage_lists_the_valid_names():
    with pytest.raises(UserError) as err:
        fsr_model(stages=["layer5", "layer4"])
    message = str(err.value)
    assert "unknown FSR stage 'layer5'" in message
    assert "valid stages: act1, layer1, layer2, layer3, layer4 (or last: layer4)" in message
