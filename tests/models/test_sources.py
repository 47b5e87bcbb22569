"""Models as timm keeps them: model folders, local-dir:, hf-hub: through the cache, train.py args, and the
one data config per model with each value's source."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import hardenctl
from hardenctl.errors import UserError
from hardenctl.models import create_timm_model, load_model, save_model, wrap_model, write_config_json

ARCH = "test_resnet"


def timm_folder(folder: Path, pretrained_cfg: dict, label_names: list[str] | None = None, num_classes: int = 4) -> Path:
    """A folder the way timm's save_for_hf writes it: config.json + model.safetensors with bare timm keys."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    net = create_timm_model(ARCH, num_classes)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(folder / "model.safetensors"))
    config = {"architecture": ARCH, "num_classes": num_classes, "num_features": 96, "pretrained_cfg": pretrained_cfg}
    if label_names:
        config["label_names"] = label_names
    (folder / "config.json").write_text(json.dumps(config))
    return folder


CFG = {
    "input_size": [3, 48, 40],
    "interpolation": "bicubic",
    "crop_pct": 0.9,
    "crop_mode": "center",
    "mean": [0.4, 0.4, 0.4],
    "std": [0.2, 0.2, 0.2],
}


@pytest.mark.parametrize("prefix", ["", "local-dir:"])
def test_a_timm_model_folder_gives_architecture_classes_labels_and_data_config(tmp_path, prefix):
    folder = timm_folder(tmp_path / "m", CFG, ["a", "b", "c", "d"])
    model = load_model(f"{prefix}{folder}")
    info, config = model.info, model.info.data_config
    assert info.arch == ARCH and info.num_classes == 4 and info.label_names == ["a", "b", "c", "d"]
    assert config.input_size == (48, 40) and config.interpolation == "bicubic" and config.crop_pct == 0.9
    assert config.mean == (0.4, 0.4, 0.4) and set(config.sources.values()) == {"config.json"}
    assert info.normalization_source == "config.json"


def test_flags_override_and_the_source_says_so(tmp_path):
    folder = timm_folder(tmp_path / "m", CFG)
    model = hardenctl.load_model(folder, crop_pct=1.0, interpolation="bilinear", input_size=(32, 32))
    config = model.info.data_config
    assert (config.crop_pct, config.interpolation, config.input_size) == (1.0, "bilinear", (32, 32))
    assert config.sources["crop_pct"] == "cli (overrides config.json)" and config.sources["crop_mode"] == "config.json"


def test_undeclared_values_come_from_the_architecture_named_as_such(tmp_path):
    torch.manual_seed(0)
    torch.save(create_timm_model(ARCH, 3).state_dict(), tmp_path / "bare.pt")
    config = hardenctl.load_model(tmp_path / "bare.pt", arch=ARCH).info.data_config
    assert config.input_size is None and config.crop_pct is None  # decided with the data (or timm's default)
    assert config.sources["mean"] == f"timm pretrained_cfg of {ARCH}" and config.sources["interpolation"].startswith(
        "timm"
    )


def test_train_py_args_are_used_and_hardenctl_metadata_wins_over_them(tmp_path):
    torch.manual_seed(0)
    net = create_timm_model(ARCH, 3)
    args = argparse.Namespace(
        model=ARCH,
        img_size=56,
        input_size=None,
        crop_pct=0.95,
        interpolation="bicubic",
        mean=[0.3, 0.3, 0.3],
        std=[0.3, 0.3, 0.3],
        num_classes=3,
    )
    torch.save({"arch": ARCH, "state_dict": net.state_dict(), "args": args, "epoch": 3}, tmp_path / "last.pth.tar")
    config = load_model(tmp_path / "last.pth.tar").info.data_config
    assert (config.input_size, config.crop_pct, config.interpolation) == ((56, 56), 0.95, "bicubic")
    assert config.mean == (0.3, 0.3, 0.3) and config.sources["crop_pct"] == "train.py args"
    # the architecture's own pretrained_cfg says 224 / 0.875 / bilinear: the stored args differ and win
    ours = save_model(
        wrap_model(net, ARCH, 3, (0.1,) * 3, (0.2,) * 3, input_size=(40, 40)), tmp_path / "ours.safetensors"
    )
    assert load_model(ours).info.data_config.sources["mean"] == "checkpoint"


def test_saved_models_are_timm_folders(tmp_path):
    folder = timm_folder(tmp_path / "m", CFG, ["a", "b", "c", "d"])
    model = load_model(folder)
    out = tmp_path / "out"
    save_model(model, out / "model.safetensors")
    write_config_json(model, out)
    again = load_model(out)
    assert again.info.data_config.to_dict()["input_size"] == [48, 40] and again.info.label_names == ["a", "b", "c", "d"]
    assert again.info.data_config.crop_pct == 0.9 and again.info.data_config.interpolation == "bicubic"
    import timm

    plain = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    x = torch.rand(2, 3, 48, 40)
    with torch.no_grad():
        assert torch.equal(plain((x - 0.4) / 0.2), again(x))
    assert tuple(plain.pretrained_cfg["input_size"]) == (3, 48, 40) and plain.pretrained_cfg["crop_pct"] == 0.9


def hub_cache(root: Path, repo: str, folder: Path) -> Path:
    """huggingface_hub's cache layout (models--ORG--NAME/refs + snapshots), filled by hand: no network."""
    commit = "0" * 40
    base = root / f"models--{repo.replace('/', '--')}"
    (base / "refs").mkdir(parents=True)
    (base / "refs" / "main").write_text(commit)
    snapshot = base / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        (snapshot / name).write_bytes((folder / name).read_bytes())
    return root


def test_hf_hub_models_load_from_the_cache_offline(tmp_path, monkeypatch):
    folder = timm_folder(tmp_path / "m", CFG, ["a", "b", "c", "d"])
    monkeypatch.setenv("HF_HUB_CACHE", str(hub_cache(tmp_path / "hub", "someone/tiny", folder)))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = load_model("hf-hub:someone/tiny")
    assert model.info.arch == ARCH and model.info.label_names == ["a", "b", "c", "d"]
    with pytest.raises(UserError, match="not in the huggingface cache and offline.*hf download someone/absent"):
        load_model("hf-hub:someone/absent")


@pytest.mark.parametrize(
    "config,named",
    [
        ({"architecture": "no_such_net_v9", "pretrained_cfg": {}}, "unknown timm architecture"),
        ({"pretrained_cfg": {}}, "names no architecture"),
        ({"architecture": ARCH, "pretrained_cfg": {"crop_pct": 2}}, "crop_pct"),
        ({"architecture": ARCH, "pretrained_cfg": {"interpolation": "cubic"}}, "interpolation"),
    ],
)
def test_bad_config_json_is_a_one_line_error(tmp_path, config, named):
    folder = timm_folder(tmp_path / "m", {})
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match=named) as caught:
        load_model(folder)
    assert "\n" not in str(caught.value)


def test_label_names_must_match_the_class_count(tmp_path):
    folder = timm_folder(tmp_path / "m", CFG, ["a", "b"])
    with pytest.raises(UserError, match="names 2 classes but the classifier has 4"):
        load_model(folder)


def test_photos_of_mixed_sizes_with_nothing_declared_use_the_architecture_size(tmp_path):
    import numpy as np
    from PIL import Image

    import hardenctl

    for i, (h, w) in enumerate([(40, 60), (50, 30), (64, 64)]):
        (tmp_path / "photos" / "a").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((h, w, 3), 40 * i, np.uint8)).save(tmp_path / "photos" / "a" / f"{i}.png")
    torch.manual_seed(0)
    torch.save(create_timm_model("resnet10t", 1).state_dict(), tmp_path / "bare.pt")
    model = hardenctl.load_model(tmp_path / "bare.pt", arch="resnet10t")
    data = hardenctl.load_data(str(tmp_path / "photos"), model, workers=0)
    assert data.image_size == (176, 176)  # resnet10t's pretrained_cfg input size
    assert (
        model.info.input_size == (176, 176)
        and model.info.data_config.sources["input_size"] == "timm pretrained_cfg of resnet10t"
    )


def test_an_undeclared_crop_stays_undeclared_in_config_json(tmp_path):
    """A CIFAR-sized model evaluated uncropped must stay uncropped when its saved folder is evaluated again."""
    torch.manual_seed(0)
    model = wrap_model(create_timm_model(ARCH, 3), ARCH, 3, (0.5,) * 3, (0.25,) * 3, input_size=(32, 32))
    save_model(model, tmp_path / "model.safetensors")
    config = json.loads(write_config_json(model, tmp_path).read_text())
    assert (
        config["pretrained_cfg"]["crop_pct"] == 0.95 == config["hardenctl_undeclared"]["crop_pct"]
    )  # for timm: test_resnet's own
    assert load_model(tmp_path).info.data_config.crop_pct is None
