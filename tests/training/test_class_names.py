"""Class names travel from the training data into the hardened model only when they name every output (issue 19).

A model folder names all its outputs or none (``hardenctl eval`` refuses a partial list): before, a 10-class model
hardened on a 3-class folder got 3 names and its own --out could not be evaluated.
"""

from __future__ import annotations

import json

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

from hardenctl.models import create_timm_model

ARGS = [
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
    "--set",
    "holdout_fraction=0.2",
    "--eval-n",
    "6",
    "--suite",
    "quick",
    "--eps",
    "0.1",
    "--workers",
    "0",
    "--device",
    "cpu",
    "--quiet",
]


def photos(root, classes=("cat", "dog", "emu"), per_class=8):
    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(root / name / f"img{i}.png")
    return root


def unnamed_model(folder, num_classes: int):
    """A timm model folder (32 px, RGB) whose config.json names no classes."""
    torch.manual_seed(0)
    folder.mkdir()
    save_file(
        {k: v.contiguous() for k, v in create_timm_model("test_resnet", num_classes).state_dict().items()},
        str(folder / "model.safetensors"),
    )
    (folder / "config.json").write_text(
        json.dumps(
            {"architecture": "test_resnet", "num_classes": num_classes, "pretrained_cfg": {"input_size": [3, 32, 32]}}
        )
    )
    return folder


def test_a_model_without_names_learns_them_from_data_that_names_every_class(cli, tmp_path):
    data = photos(tmp_path / "train")
    out = tmp_path / "out"
    code, _, err = cli("harden", unnamed_model(tmp_path / "input", 3), "--data", data, "--out", out, *ARGS)
    assert code == 0, err
    assert json.loads((out / "config.json").read_text())["label_names"] == ["cat", "dog", "emu"]
    code, _, err = cli(
        "eval", out, "--data", data, "--attacks", "fgsm", "--n", "6", "--workers", "0", "--no-strict", "--quiet"
    )
    assert code in (0, 1), err  # it loads and evaluates (exit 1 would be a failed check, not a refusal)
    other = photos(tmp_path / "other", classes=("cat", "dog", "fox"), per_class=2)
    code, _, err = cli("eval", out, "--data", other, "--attacks", "fgsm", "--workers", "0", "--quiet")
    assert code == 2 and "class 2 is 'fox' in the data but 'emu' in the model" in err  # the names it learnt are checked


def test_data_naming_fewer_classes_than_the_model_has_leaves_it_unnamed_and_its_folder_evaluates(cli, tmp_path):
    data = photos(tmp_path / "train")
    out = tmp_path / "out"
    code, _, err = cli("harden", unnamed_model(tmp_path / "input", 10), "--data", data, "--out", out, *ARGS)
    assert code == 0, err
    assert "label_names" not in json.loads((out / "config.json").read_text())
    notes = json.loads((out / "report.json").read_text())["notes"]
    assert any("the training data names 3 classes but the model has 10 outputs" in note for note in notes), notes
    code, stdout, err = cli(
        "eval", out, "--data", data, "--attacks", "fgsm", "--n", "6", "--workers", "0", "--no-strict", "--json"
    )
    assert code == 0, err  # before: exit 2, "names 3 classes but the classifier has 10 outputs"
    assert json.loads(stdout)["n"] == 6
