"""Checkpoint I/O: safetensors metadata round trip, plain timm loading, normalisation, input size."""
from __future__ import annotations

import pytest
import timm
import torch

import hardenctl
from hardenctl.errors import UserError
from hardenctl.models import create_timm_model, save_model, wrap_model


def test_safetensors_round_trip_and_plain_timm_load(digits_model_path, tmp_path):
    model = hardenctl.load_model(digits_model_path)
    assert model.info.arch == "test_resnet" and model.info.num_classes == 10 and model.info.in_chans == 1
    assert model.info.input_size == (8, 8) and model.info.normalization_source == "checkpoint"
    x = torch.rand(4, 1, 8, 8)
    again = hardenctl.load_model(save_model(model, tmp_path / "again.safetensors"))
    plain = timm.create_model("test_resnet", num_classes=10, in_chans=1, checkpoint_path=str(digits_model_path)).eval()
    with torch.no_grad():
        logits = model(x)
        assert torch.equal(logits, again(x))
        assert torch.allclose(logits, plain((x - 0.3) / 0.4), atol=1e-5)


def test_normalisation_is_folded_in(tmp_path):
    net = create_timm_model("test_resnet", 3, 3)
    model = wrap_model(net, "test_resnet", 3, (0.5, 0.4, 0.3), (0.2, 0.2, 0.2))
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        expected = net.eval()((x - torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)) / 0.2)
        assert torch.allclose(model.eval()(x), expected)


@pytest.mark.parametrize("arch", ["test_resnet", "resnet10t"])
def test_a_wrapped_model_prepares_images_as_it_will_after_a_save_and_load(tmp_path, arch):
    """A model made in Python and the same model read back from its file must resize and crop alike (they once
    differed: timm's 0.875 crop in memory, the architecture's own crop_pct and interpolation once loaded)."""
    model = wrap_model(create_timm_model(arch, 10, 1), arch, 10, (0.3,), (0.4,), in_chans=1, input_size=(32, 32))
    again = hardenctl.load_model(save_model(model, tmp_path / "m.safetensors"))
    fields = ("input_size", "interpolation", "crop_mode", "effective_crop_pct", "mean", "std")
    assert {f: getattr(model.info.data_config, f) for f in fields} == {f: getattr(again.info.data_config, f) for f in fields}
    pretrained = timm.create_model(arch).pretrained_cfg
    assert model.info.data_config.effective_crop_pct == pretrained["crop_pct"]
    assert model.info.data_config.interpolation == pretrained["interpolation"]


def test_contradicting_arch_is_an_error(digits_model_path):
    with pytest.raises(UserError, match="arch"):
        hardenctl.load_model(digits_model_path, arch="resnet18")


def test_vit_gets_img_size_from_input_size(tmp_path):
    net = create_timm_model("test_vit", 10, 3, input_size=(32, 32))
    torch.save(net.state_dict(), tmp_path / "vit.pt")
    model = hardenctl.load_model(tmp_path / "vit.pt", arch="test_vit", input_size=(32, 32))
    assert model.info.input_size_source == "cli"
    with torch.no_grad():
        assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
