"""A folder hardenctl writes is one model to timm and to hardenctl: plain timm (``create_model('local-dir:DIR')``
+ ``resolve_model_data_config`` + ``create_transform``) and hardenctl's loading and folder data path give the same
logits on the same photo files, for a conv net and a ViT, at the architecture's size and at another one."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from hardenctl.data import load_dataset
from hardenctl.models import create_timm_model, load_model, save_model, wrap_model, write_config_json

sys.path.insert(0, str(Path(__file__).parents[1] / "data"))
from photo_helpers import pattern, save  # noqa: E402

# other sizes, one exactly 32×32 and one exactly 160×160 (the architectures' own size): those too are resized and
# cropped
SIZES = [(37, 53), (32, 32), (90, 70), (160, 160), (48, 33), (200, 120)]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(SIZES):
        save(root / ("cat" if i % 2 else "dog") / f"{i}{'.jpg' if i % 3 == 0 else '.png'}", pattern(rng, h, w))
    return root


def timm_logits(folder: Path, files: list[str], crop_pct: float | None = None) -> torch.Tensor:
    """What a timm user gets from the folder, with nothing but timm (``crop_pct`` only to show the test can tell)."""
    net = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    config = timm.data.resolve_model_data_config(net)
    if crop_pct is not None:
        config["crop_pct"] = crop_pct
    transform = timm.data.create_transform(**config)
    with torch.no_grad():
        return torch.cat([net(transform(Image.open(file).convert("RGB"))[None]) for file in files])


@pytest.mark.parametrize("arch", ["test_resnet", "test_vit"])
@pytest.mark.parametrize("size", [None, (32, 32)], ids=["architecture-size", "32px"])
def test_plain_timm_and_hardenctl_give_the_same_logits_on_the_same_files(tmp_path, photos, arch, size):
    torch.manual_seed(0)
    net = create_timm_model(arch, 2, input_size=size)
    model = wrap_model(net, arch, 2, (0.4, 0.5, 0.6), (0.2, 0.25, 0.3), input_size=size)  # crop_pct never declared
    folder = tmp_path / "model"
    save_model(model, folder / "model.safetensors")
    write_config_json(model, folder)

    ours = load_model(folder)  # what `hardenctl eval DIR --data photos` loads and reads
    data = load_dataset(str(photos), data_config=ours.info.data_config, in_chans=ours.info.in_chans, workers=0)
    with torch.no_grad():
        logits = ours(data.pixels(0, len(data)))
    reference = timm_logits(folder, data.filenames)
    expected_size = size or tuple(timm.models.get_pretrained_cfg(arch).input_size[1:])
    assert data.image_size == expected_size and logits.shape == reference.shape == (len(SIZES), 2)
    assert torch.allclose(logits, reference, rtol=1e-4, atol=1e-5), (logits - reference).abs().max()
    # the comparison can tell: timm's own default crop (what an undeclared crop_pct once meant to timm) differs
    assert not torch.allclose(logits, timm_logits(folder, data.filenames, crop_pct=0.875), rtol=1e-4, atol=1e-5)


def test_values_written_only_for_timm_stay_undeclared_for_hardenctl(tmp_path):
    """crop_pct and input_size hardenctl never had declared are written for timm (which would fill its own 0.875
    and 224 px) and named as such: read back, they are still undeclared, so arrays at the size pass as they are."""
    torch.manual_seed(0)
    model = wrap_model(create_timm_model("test_resnet", 3), "test_resnet", 3, (0.5,) * 3, (0.25,) * 3)
    save_model(model, tmp_path / "model.safetensors")
    config = json.loads(write_config_json(model, tmp_path).read_text())
    cfg = timm.models.get_pretrained_cfg("test_resnet")
    assert config["pretrained_cfg"]["crop_pct"] == cfg.crop_pct and config["pretrained_cfg"]["input_size"] == list(
        cfg.input_size
    )
    again = load_model(tmp_path).info.data_config
    assert again.crop_pct is None and again.input_size is None and again.effective_crop_pct == cfg.crop_pct
    edited = {
        **config,
        "pretrained_cfg": {**config["pretrained_cfg"], "crop_pct": 0.8},
    }  # a value someone changed is declared
    (tmp_path / "config.json").write_text(json.dumps(edited))
    assert load_model(tmp_path).info.data_config.crop_pct == 0.8


def test_a_vit_at_another_size_is_rebuilt_by_timm_at_that_size(tmp_path):
    torch.manual_seed(0)
    net = create_timm_model("test_vit", 3, input_size=(48, 32))
    model = wrap_model(net, "test_vit", 3, (0.5,) * 3, (0.5,) * 3, input_size=(48, 32))
    save_model(model, tmp_path / "model.safetensors")
    config = json.loads(write_config_json(model, tmp_path).read_text())
    assert config["model_args"]["img_size"] == [48, 32] and config["pretrained_cfg"]["input_size"] == [3, 48, 32]
    plain = timm.create_model(f"local-dir:{tmp_path}", pretrained=True).eval()
    x = torch.rand(2, 3, 48, 32)
    with torch.no_grad():
        assert torch.allclose(plain((x - 0.5) / 0.5), model.eval()(x), atol=1e-6)


def test_a_folder_timm_itself_saved_is_the_model_timm_loads(tmp_path):
    """timm's save_for_hf records a ViT's img_size in model_args (its pretrained_cfg keeps the architecture's 160 px):
    hardenctl builds the network from those model_args, as timm's local-dir loading does, and gets the same logits."""
    from timm.models._hub import save_for_hf

    torch.manual_seed(0)
    save_for_hf(timm.create_model("test_vit", num_classes=3, img_size=32).eval(), tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_args"]["img_size"] == [32, 32]
    plain = timm.create_model(f"local-dir:{tmp_path}", pretrained=True).eval()
    ours = load_model(tmp_path)
    size = tuple(timm.data.resolve_model_data_config(plain)["input_size"][1:])
    assert ours.info.input_size == size
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        assert torch.allclose(plain((x - 0.5) / 0.5), ours(x), atol=1e-6)


@pytest.mark.parametrize(
    "arch_cfg", [timm.models.get_pretrained_cfg("resnet10t").to_dict(), {}], ids=["resnet10t", "none"]
)
def test_what_nobody_declared_is_what_timm_resolves(arch_cfg):
    """Undeclared values come from timm's resolve_data_config (for a network without a pretrained_cfg: timm's own
    defaults, bicubic and 0.875 at 224 px, where hardenctl once said bilinear)."""
    from timm.models import PretrainedCfg

    from hardenctl.models import build_data_config

    config = build_data_config([("python", {"mean": (0.5,) * 3, "std": (0.5,) * 3})], {}, arch_cfg, "net")
    expected = timm.data.resolve_data_config(pretrained_cfg=arch_cfg or PretrainedCfg().to_dict())
    assert (config.interpolation, config.crop_mode, config.effective_crop_pct, config.default_input_size) == (
        expected["interpolation"],
        expected["crop_mode"],
        expected["crop_pct"],
        tuple(expected["input_size"][1:]),
    )
    assert config.crop_pct is None and config.input_size is None and config.mean == (0.5,) * 3
