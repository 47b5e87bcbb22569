"""Real-photo workflow end to end: a timm train.py checkpoint evaluated exactly as timm's own pipeline would,
and a model hardened on a folder of variable-size photos written as a timm model folder."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from testing_helpers import read_json

import hardenctl
from hardenctl.evaluation import EvalConfig, evaluate
from hardenctl.models import create_timm_model

sys.path.insert(0, str(Path(__file__).parent / "data"))
from photo_helpers import pattern, save  # noqa: E402

ARCH = "test_resnet"
SIZES = [(37, 53), (64, 48), (90, 70), (48, 48), (33, 80), (71, 29), (55, 41)]


def photos(root: Path, per_class: int = 6, classes=("cat", "dog", "emu")) -> Path:
    rng = np.random.default_rng(0)
    counter = 0
    for name in classes:
        for i in range(per_class):
            h, w = SIZES[counter % len(SIZES)]
            save(root / name / f"img{i:02d}{'.jpg' if i % 2 else '.png'}", pattern(rng, h, w, 3))
            counter += 1
    (root / "cat" / "notes.txt").write_text("not an image")  # ignored
    return root


def test_train_py_checkpoint_is_evaluated_exactly_as_timm_would(tmp_path):
    """The stored args (40 px, crop_pct 0.8, bicubic, own mean/std) differ from test_resnet's pretrained_cfg
    and must win; per-image predictions equal timm's create_transform + model on the same files."""
    folder = photos(tmp_path / "val")
    torch.manual_seed(0)
    net = create_timm_model(ARCH, 3)
    args = argparse.Namespace(
        model=ARCH,
        img_size=40,
        input_size=None,
        crop_pct=0.8,
        interpolation="bicubic",
        mean=[0.45, 0.4, 0.35],
        std=[0.2, 0.25, 0.3],
        num_classes=3,
    )
    torch.save({"arch": ARCH, "state_dict": net.state_dict(), "args": args}, tmp_path / "model_best.pth.tar")
    cfg = timm.models.get_pretrained_cfg(ARCH)
    assert (cfg.crop_pct, cfg.interpolation) != (0.8, "bicubic")  # the test means something only if they differ

    model = hardenctl.load_model(tmp_path / "model_best.pth.tar")
    data = hardenctl.load_data(str(folder), model, workers=0)
    report = evaluate(model, data, EvalConfig(attacks=["fgsm"], large_eps_samples=0, eps=0.01))

    def timm_logits(crop_pct: float) -> dict[str, torch.Tensor]:
        transform = timm.data.create_transform(
            input_size=(3, 40, 40),
            interpolation="bicubic",
            crop_pct=crop_pct,
            mean=(0.45, 0.4, 0.35),
            std=(0.2, 0.25, 0.3),
        )
        dataset = timm.data.create_dataset("", root=str(folder), transform=transform)
        with torch.no_grad():
            return {
                str(Path(dataset.filename(i, absolute=True))): net(dataset[i][0][None])[0] for i in range(len(dataset))
            }

    net.eval()
    reference = timm_logits(0.8)
    timm_prediction = {name: int(logits.argmax()) for name, logits in reference.items()}
    ours = dict(zip(report.samples.source_id, report.samples.clean_prediction))
    assert set(ours) == set(timm_prediction) and len(ours) == 18
    assert ours == timm_prediction
    # a random model may predict one class for every image: the logits, not only the predictions, must agree
    with torch.no_grad():
        logits = model(data.pixels(0, len(data)))
    assert torch.allclose(logits, torch.stack([reference[name] for name in data.filenames]), rtol=1e-4, atol=1e-5)
    wrong_crop = timm_logits(0.875)  # the comparison can tell a different crop apart
    assert not torch.allclose(logits, torch.stack([wrong_crop[name] for name in data.filenames]), rtol=1e-4, atol=1e-5)
    assert report.model["data_config"]["sources"]["crop_pct"] == "train.py args"
    timm_top1 = np.mean(
        [timm_prediction[name] == label for name, label in zip(report.samples.source_id, report.samples.label)]
    )
    assert report.clean_accuracy == pytest.approx(timm_top1)


def test_harden_on_photos_writes_a_timm_folder_that_evaluates_without_flags(cli, tmp_path):
    train, val = photos(tmp_path / "train", per_class=8), photos(tmp_path / "val", per_class=3)
    torch.manual_seed(0)
    net = create_timm_model(ARCH, 3)
    folder = tmp_path / "input"
    folder.mkdir()
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(folder / "model.safetensors"))
    cfg = {
        "input_size": [3, 64, 64],
        "interpolation": "bilinear",
        "crop_pct": 0.9,
        "mean": [0.5] * 3,
        "std": [0.25] * 3,
    }
    (folder / "config.json").write_text(
        json.dumps(
            {"architecture": ARCH, "num_classes": 3, "pretrained_cfg": cfg, "label_names": ["cat", "dog", "emu"]}
        )
    )
    out = tmp_path / "hardened"
    code, _, err = cli(
        "harden",
        folder,
        "--data",
        train,
        "--eval-data",
        val,
        "--out",
        out,
        "--recipe",
        "pgd-at",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--set",
        "attack_steps=1",
        "--set",
        "monitor_n=8",
        "--eval-n",
        "9",
        "--suite",
        "quick",
        "--workers",
        "0",
        "--quiet",
    )
    assert code == 0, err
    config = read_json(out / "config.json")
    assert config["architecture"] == ARCH and config["label_names"] == ["cat", "dog", "emu"]
    assert config["pretrained_cfg"]["input_size"] == [3, 64, 64] and config["pretrained_cfg"]["crop_pct"] == 0.9
    report = read_json(out / "report.json")
    assert report["input"]["model"]["data_config"]["sources"]["crop_pct"] == "config.json"
    code, stdout, err = cli(
        "eval", out, "--data", val, "--attacks", "fgsm", "--n", "9", "--json", "--workers", "0", "--no-strict"
    )
    assert code == 0, err
    evaluated = json.loads(stdout)
    assert (
        evaluated["data_sha256"] == report["hardened"]["data_sha256"]
    )  # the same pixels: same preprocessing, no flags
    assert evaluated["clean_accuracy"] == report["hardened"]["clean_accuracy"]
    plain = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    ours = hardenctl.load_model(out)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(plain((x - 0.5) / 0.25), ours(x))


def test_class_names_that_do_not_match_the_model_are_refused(cli, tmp_path):
    val = photos(tmp_path / "val", per_class=2, classes=("cat", "dog", "fox"))
    torch.manual_seed(0)
    folder = tmp_path / "m"
    folder.mkdir()
    from safetensors.torch import save_file

    save_file(
        {k: v.contiguous() for k, v in create_timm_model(ARCH, 3).state_dict().items()},
        str(folder / "model.safetensors"),
    )
    (folder / "config.json").write_text(
        json.dumps(
            {
                "architecture": ARCH,
                "num_classes": 3,
                "label_names": ["cat", "dog", "emu"],
                "pretrained_cfg": {"input_size": [3, 32, 32]},
            }
        )
    )
    code, _, err = cli("eval", folder, "--data", val, "--attacks", "fgsm", "--quiet", "--report", tmp_path / "r.json")
    assert code == 2 and "class 2 is 'fox' in the data but 'emu' in the model" in err, err
    assert not (tmp_path / "r.json").exists()


def test_a_corrupt_photo_is_named_or_skipped_and_counted(cli, tmp_path):
    val = photos(tmp_path / "val", per_class=2)
    (val / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    torch.manual_seed(0)
    torch.save(create_timm_model(ARCH, 3).state_dict(), tmp_path / "m.pt")
    args = (
        "eval",
        tmp_path / "m.pt",
        "--arch",
        ARCH,
        "--data",
        val,
        "--attacks",
        "fgsm",
        "--input-size",
        "32,32",
        "--workers",
        "0",
        "--no-strict",
    )
    code, _, err = cli(*args, "--quiet", "--report", tmp_path / "r.json")
    assert code == 2 and "broken.jpg" in err and "--skip-unreadable" in err, err
    assert not (tmp_path / "r.json").exists()
    code, stdout, err = cli(*args, "--skip-unreadable", "--json")
    assert code == 0, err
    report = json.loads(stdout)
    assert report["n"] == 6 and any("skipped 1 unreadable" in note for note in report["data"]["notes"])
