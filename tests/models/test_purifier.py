"""AToP's front-end: the random transforms (noise σ and masked fraction exact), the composite f(g(t(x))),
its randomness (seeded, or fixed), gradients, save → load, and EOT evaluation of a randomised model."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from hardenctl.data import load_dataset
from hardenctl.errors import UserError
from hardenctl.evaluation import EvalConfig, evaluate
from hardenctl.models import ImageClassifier, create_timm_model, load_model, save_model, wrap_model
from hardenctl.models.purifier import (
    PURIFIER_PREFIX,
    InpaintingPurifier,
    PurifiedClassifier,
    RandomTransform,
    TransformConfig,
    block_masks,
    new_purifier,
)
from hardenctl.report import render_markdown


def classifier(channels: int = 3, size: int = 16) -> ImageClassifier:
    torch.manual_seed(0)
    net = create_timm_model("test_resnet", num_classes=10, in_chans=channels)
    return wrap_model(
        net, "test_resnet", 10, (0.5,) * channels, (0.25,) * channels, in_chans=channels, input_size=(size, size)
    ).eval()


def composite(kind: str = "rt2", block: int = 4, channels: int = 3, size: int = 16, **transform) -> PurifiedClassifier:
    config = TransformConfig(kind, block=block, **transform)
    return PurifiedClassifier(classifier(channels, size), new_purifier(channels, 8, 2), RandomTransform(config)).eval()


def images(n: int = 6, size: int = 16, seed: int = 0, channels: int = 3) -> torch.Tensor:
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------
# the transforms
# ---------------------------------------------------------------------------------------------
def test_rt2_noise_is_exactly_sigma_times_a_normal_draw_then_clipped_then_masked():
    transform = RandomTransform(TransformConfig("rt2", sigma=0.25, missing_rate=0.25, block=4))
    x = images(64, 32)
    noise, masks = transform.draw(x, torch.Generator().manual_seed(3))
    expected = 0.25 * torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    assert torch.equal(noise, expected)  # σ·N(0, I) from the same stream, nothing else
    assert abs(float(noise.std()) - 0.25) < 0.0025  # 196k draws: the std is σ within 1%
    out = transform.apply(x, noise, masks[0])
    assert torch.equal(out, (x + noise).clamp(0, 1) * (1 - masks[0]))
    visible = masks[0].expand_as(out) == 0
    assert ((x + noise)[visible] > 1).any() and float(out[visible].max()) == 1.0  # the clip is exercised, not vacuous
    assert ((x + noise)[visible] < 0).any() and float(out[visible].min()) == 0.0
    assert torch.all(out[masks[0].expand_as(out) == 1] == 0)


@pytest.mark.parametrize(
    "size, block, rate, blocks_masked, cells",
    [(32, 4, 0.25, 16, 64), (32, 4, 0.1, 6, 64), (32, 8, 0.5, 8, 16), (8, 2, 0.25, 4, 16), (10, 4, 0.25, 2, 9)],
)
def test_the_masked_count_is_exact_per_image_and_whole_blocks_are_masked(size, block, rate, blocks_masked, cells):
    masks = block_masks(50, (size, size), block, rate, generator=torch.Generator().manual_seed(1))
    assert masks.shape == (1, 50, 1, size, size) and set(masks.unique().tolist()) <= {0.0, 1.0}
    grid = masks[0, :, 0, ::block, ::block]  # one pixel per block: its top-left corner
    assert grid.shape[1:].numel() == cells
    assert (grid.flatten(1).sum(1) == blocks_masked).all()  # the exact count, for every image
    expanded = grid.repeat_interleave(block, 1).repeat_interleave(block, 2)[:, :size, :size]
    assert torch.equal(expanded, masks[0, :, 0])  # block-constant
    if size % block == 0:
        assert (masks[0].flatten(1).mean(1) == blocks_masked / cells).all()  # the masked pixel fraction is exact
    assert len({tuple(g.flatten().tolist()) for g in grid}) > 10  # an independent draw per image


def test_rt1_draws_no_noise_and_rt3_masks_partition_the_image():
    x = images(4, 16)
    noise, masks = RandomTransform(TransformConfig("rt1", block=4)).draw(x)
    assert noise is None and masks.shape == (1, 4, 1, 16, 16)
    noise, masks = RandomTransform(TransformConfig("rt3", missing_rate=0.25, block=4)).draw(x)
    assert noise is not None and masks.shape == (4, 4, 1, 16, 16)
    assert torch.equal(masks.sum(0), torch.ones(4, 1, 16, 16))  # every pixel in exactly one mask
    assert (masks.flatten(2).mean(2) == 0.25).all()


def test_rt3_takes_every_pixel_from_the_pass_that_masked_it():
    model = composite("rt3", missing_rate=0.5)
    x = images(3)
    noise, masks = model.transform.draw(x)
    with torch.no_grad():
        out = model.purify(x, (noise, masks))
        passes = [model.purifier(RandomTransform.apply(x, noise, m), m) for m in masks]
    torch.testing.assert_close(out, torch.where(masks[0].bool(), passes[0], passes[1]))


@pytest.mark.parametrize(
    "values, named",
    [
        ({"kind": "rt9"}, "rt='rt9' is not a transform"),
        ({"sigma": -0.1}, "sigma=-0.1 is out of range"),
        ({"missing_rate": 1.0}, "missing_rate=1.0 is out of range"),
        ({"block": 0}, "block=0"),
        ({"kind": "rt3", "missing_rate": 0.75}, "rt3 needs missing_rate in [0.05, 0.5]"),
    ],
)
def test_bad_transform_settings_are_one_line_errors(values, named):
    with pytest.raises(UserError) as err:
        TransformConfig(**values)
    assert named in str(err.value) and "\n" not in str(err.value)


# ---------------------------------------------------------------------------------------------
# the composite
# ---------------------------------------------------------------------------------------------
def test_a_fixed_seed_reproduces_the_pipeline_and_draws_differ_otherwise():
    model = composite()
    x = images()
    with torch.no_grad():
        torch.manual_seed(5)
        first = model(x)
        torch.manual_seed(5)
        again = model(x)
        other = model(x)
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert model.info.randomized


def test_the_fixed_mask_is_deterministic_and_the_same_for_every_image():
    model = composite()
    model.set_fixed_mask(7)
    x = images()
    with torch.no_grad():
        a, b, alone = model(x), model(x), model(x[2:3])
        noise, masks = model.transform.draw(x)
    assert not model.info.randomized and torch.equal(a, b)
    torch.testing.assert_close(alone, a[2:3], rtol=1e-5, atol=1e-5)  # independent of the rest of the batch
    assert noise.shape[0] == 1 and masks.shape[1] == 1  # one draw, broadcast over the batch
    model.set_fixed_mask(None)
    with torch.no_grad():
        assert model.info.randomized and not torch.equal(model(x), model(x))


def test_gradients_reach_the_input_and_the_purifier_but_never_the_classifier():
    model = composite()
    model.train()
    assert model.training and model.purifier.training and not model.model.training  # classifier stays in eval mode
    x = images().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(model(x), torch.arange(6) % 10)
    loss.backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    assert (x.grad.flatten(1).abs().sum(1) > 0).all()  # every image gets an input gradient through g
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in model.purifier.parameters())
    assert all(not p.requires_grad and p.grad is None for p in model.model.parameters())


def test_the_composite_outputs_logits_and_the_purified_image():
    model = composite()
    x = images()
    draw = model.transform.draw(x)
    with torch.no_grad():
        purified, logits = model(x, draw, "both")
        assert torch.equal(model(x, draw, "purified"), purified) and torch.equal(model(x, draw), logits)
        assert torch.equal(logits, model.classifier_only()(purified))
    assert logits.shape == (6, 10) and purified.shape == x.shape
    assert isinstance(model, ImageClassifier) and not model.classifier_only().info.randomized


def test_save_then_load_gives_identical_outputs_under_a_fixed_seed(tmp_path):
    model = composite("rt3", missing_rate=0.5)
    with torch.no_grad():  # move the purifier off its initial weights so the comparison means something
        for p in model.purifier.parameters():
            p.add_(0.01 * torch.randn_like(p))
    path = save_model(model, tmp_path / "model.safetensors")
    loaded = load_model(path)
    assert isinstance(loaded, PurifiedClassifier) and loaded.info.randomized and not loaded.training
    assert loaded.transform.config == model.transform.config
    assert (loaded.purifier.width, loaded.purifier.depth) == (8, 2)
    x = images()
    with torch.no_grad():
        torch.manual_seed(11)
        ours = model(x)
        torch.manual_seed(11)
        theirs = loaded(x)
    assert torch.equal(ours, theirs)
    keys = load_file(str(path)).keys()
    assert {k for k in keys if not k.startswith(PURIFIER_PREFIX)} == set(model.model.state_dict())  # bare timm keys
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
    assert json.loads(meta["randomized"]) is True
    assert json.loads(meta["hardenctl"])["atop"]["transform"] == {
        "kind": "rt3",
        "sigma": 0.25,
        "missing_rate": 0.5,
        "block": 4,
    }


def _rewrite(path, tmp_path, edit_meta=None, drop=None):
    tensors = load_file(str(path))
    with safe_open(str(path), framework="pt") as fh:
        meta = dict(fh.metadata())
    hardenctl_meta = json.loads(meta["hardenctl"])
    if edit_meta:
        edit_meta(hardenctl_meta["atop"])
    meta["hardenctl"] = json.dumps(hardenctl_meta)
    out = tmp_path / "edited.safetensors"
    save_file({k: v for k, v in tensors.items() if not (drop and k.startswith(drop))}, str(out), metadata=meta)
    return out


@pytest.mark.parametrize(
    "edit, drop, named",
    [
        (lambda m: m["transform"].update(kind="rt9"), None, "AToP transform is invalid"),
        (lambda m: m["transform"].update(colour="red"), None, "AToP metadata is malformed"),
        (lambda m: m["purifier"].update(width="wide"), None, "AToP metadata is malformed"),
        (lambda m: m.update(format=99), None, "format 99"),
        (lambda m: m.pop("purifier"), None, "AToP metadata is malformed"),
        (None, PURIFIER_PREFIX + "head", "purifier weights do not fit"),
    ],
)
def test_malformed_composite_checkpoints_are_one_line_errors(tmp_path, edit, drop, named):
    path = save_model(composite(), tmp_path / "model.safetensors")
    with pytest.raises(UserError) as err:
        load_model(_rewrite(path, tmp_path, edit, drop))
    assert named in str(err.value) and "\n" not in str(err.value)


# ---------------------------------------------------------------------------------------------
# evaluation cannot be fooled by the randomness
# ---------------------------------------------------------------------------------------------
class NoisyLinear(torch.nn.Module):
    """A toy randomised model: a fixed linear classifier plus fresh Gaussian noise on its logits at every pass."""

    def __init__(self, weight: torch.Tensor, scale: float):
        super().__init__()
        self.linear = torch.nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            self.linear.weight.copy_(weight)
            self.linear.bias.zero_()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.linear(x.flatten(1))
        return logits + self.scale * torch.randn_like(logits)


def test_eot_evaluation_differs_from_a_single_draw_and_is_what_the_report_uses():
    data = load_dataset("digits-test").head(64)
    x, y = data.pixels(0, 64), data.y
    # class means as weights: a weak but real classifier, so the noise flips borderline points
    weight = torch.stack([x[y == k].flatten(1).mean(0) if (y == k).any() else torch.zeros(64) for k in range(10)]) * 4
    model = NoisyLinear(weight, scale=1.0)
    options = {"attacks": ["fgsm"], "eps": 0.05, "n": 64, "large_eps_samples": 0, "seed": 0}
    single = evaluate(model, data, EvalConfig(eot_samples=1, **options))
    eot = evaluate(model, data, EvalConfig(eot_samples=8, **options))
    assert single.randomized and eot.randomized and (single.eot_samples, eot.eot_samples) == (1, 8)
    assert eot.robust_accuracy < single.robust_accuracy - 0.05, (single.robust_accuracy, eot.robust_accuracy)
    default = evaluate(model, data, EvalConfig(**options))  # nobody asked for EOT: detected and used anyway
    assert default.randomized and default.eot_samples == EvalConfig().eot_samples > 1
    assert "randomised" in render_markdown(default) and "20 EOT draws" in render_markdown(default)
    # the composite declares itself randomised: EOT without detection, and the report says what it is
    purified = composite("rt2", block=2, channels=1, size=8)
    report = evaluate(
        purified,
        data.head(8),
        EvalConfig(attacks=["fgsm"], eps=0.05, n=8, eot_samples=3, large_eps_samples=0, randomized=None),
    )
    assert report.randomized and report.eot_samples == 3 and "AToP composite" in report.extra["purifier"]["summary"]
    again = evaluate(
        purified, data.head(8), EvalConfig(attacks=["fgsm"], eps=0.05, n=8, eot_samples=3, large_eps_samples=0)
    )
    assert (again.clean_accuracy, again.robust_accuracy) == (
        report.clean_accuracy,
        report.robust_accuracy,
    )  # the seed repeats it


def test_the_purifier_accepts_any_size_and_a_broadcast_mask():
    purifier = InpaintingPurifier(3, width=4, depth=3)
    for size in (8, 11, 32):
        x = torch.rand(2, 3, size, size)
        assert purifier(x, torch.zeros(1, 1, size, size)).shape == x.shape
