"""Checkpoint I/O: safetensors metadata round trip, plain timm loading, normalisation, input size."""

from __future__ import annotations

import json

import pytest
import timm
import torch
from safetensors.torch import save_file

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
    assert {f: getattr(model.info.data_config, f) for f in fields} == {
        f: getattr(again.info.data_config, f) for f in fields
    }
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


# ---------------------------------------------------------------------------------------------
# a file that needs code to load: refused, naming what it would import and how to re-save it
# ---------------------------------------------------------------------------------------------
class PickledModel(torch.nn.Module):  # torch.save(model) pickles this class by reference: loading imports this module
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(2, 2)


@pytest.mark.parametrize("zip_format", [True, False])
def test_a_pickled_model_is_refused_naming_the_global_and_the_resave(tmp_path, zip_format):
    path = tmp_path / "whole-model.pt"
    torch.save(PickledModel(), path, _use_new_zipfile_serialization=zip_format)
    with pytest.raises(UserError) as caught:
        hardenctl.load_model(path, arch="test_resnet")
    message = str(caught.value)
    assert "\n" not in message and len(message) < 400, message
    assert (
        f"refusing to load checkpoint {path}: it would import {__name__}.PickledModel, and hardenctl will not "
        "unpickle code (it could run anything); re-save only the weights" in message
    ), message
    assert message.endswith(
        "torch.save(model.state_dict(), 'model.pt'), "
        "or safetensors.torch.save_file(model.state_dict(), 'model.safetensors')"
    ), message


def test_a_refused_checkpoint_with_nothing_to_name_still_says_how_to_resave(tmp_path):
    from hardenctl.models.checkpoint import refused_pickle

    path = tmp_path / "odd.pt"
    path.write_bytes(b"not a zip")
    message = str(refused_pickle(path, Exception("Unsupported operand 149")))
    assert "it holds pickled Python objects, and hardenctl will not unpickle code" in message
    assert "torch.save(model.state_dict()" in message


# ---------------------------------------------------------------------------------------------
# config.json label_names: names, one per output
# ---------------------------------------------------------------------------------------------
def model_folder(folder, label_names):
    folder.mkdir()
    torch.manual_seed(0)
    save_file(
        {k: v.contiguous() for k, v in create_timm_model("test_resnet", 3).state_dict().items()},
        str(folder / "model.safetensors"),
    )
    (folder / "config.json").write_text(
        json.dumps({"architecture": "test_resnet", "num_classes": 3, "label_names": label_names})
    )
    return folder


@pytest.mark.parametrize(
    "names,expect",
    [
        ([0, 1, 2], "'config.json label_names' is [0, 1, 2], not a list of class names (name 0 (0) is not a string)"),
        (["a", "b\nc", "d"], "name 1 ('b\\nc') holds the character '\\n'"),
        (["a", "b"], "config.json's label_names of"),
    ],
)
def test_config_json_label_names_are_checked(tmp_path, names, expect):
    with pytest.raises(UserError) as caught:
        hardenctl.load_model(model_folder(tmp_path / "m", names))
    assert expect in str(caught.value) and "\n" not in str(caught.value), str(caught.value)


def test_config_json_label_names_load(tmp_path):
    names = ["猫", "dog", "emu"]
    assert hardenctl.load_model(model_folder(tmp_path / "m", names)).info.label_names == names
    assert hardenctl.load_model(model_folder(tmp_path / "n", [])).info.label_names is None
