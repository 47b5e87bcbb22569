"""The same weights and settings always make the same model.safetensors, byte for byte (and so the same model_sha256).

safetensors' writer keeps the header metadata in a Rust hash map, whose order changes from one save to the next and
from one process to the next; hardenctl rewrites the header with its keys sorted.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys
import textwrap

import pytest
import timm
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import hardenctl
from hardenctl.models import create_timm_model, save_model, wrap_model
from hardenctl.models.save import sort_safetensors_header

ARCH = "test_resnet"


def small_model():
    torch.manual_seed(0)
    model = wrap_model(create_timm_model(ARCH, 10, 1), ARCH, 10, (0.3,), (0.4,), in_chans=1, input_size=(8, 8))
    model.info.label_names = [f"class {i}" for i in range(10)]
    model.info.metadata = {
        "recipe": "mart",
        "recipe_config": {"eps": 0.1, "beta": 6.0, "stages": ["layer4"]},
        "epoch": 3,
    }
    return model


def header(path) -> tuple[int, dict]:
    raw = path.read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    return size, json.loads(raw[8 : 8 + size])


def test_saving_twice_gives_the_same_bytes(tmp_path):
    model = small_model()
    first = save_model(model, tmp_path / "a.safetensors", {"trained_by": "test"}).read_bytes()
    for name in "bcd":  # each save builds a new hash map: without the sorted header, 4 saves all agreeing is ~1e-30
        assert save_model(model, tmp_path / f"{name}.safetensors", {"trained_by": "test"}).read_bytes() == first


SAVE_IN_A_FRESH_PROCESS = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[2])
    from test_save import small_model
    from hardenctl.models import save_model
    save_model(small_model(), sys.argv[1], {"trained_by": "test"})
""")


@pytest.mark.slow
def test_two_fresh_processes_write_the_same_bytes(tmp_path):
    """Hash-map order differs between processes (Rust seeds it at random; PYTHONHASHSEED set apart too)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                SAVE_IN_A_FRESH_PROCESS,
                str(tmp_path / f"{seed}.safetensors"),
                os.path.dirname(__file__),
            ],
            env={**env, "PYTHONHASHSEED": str(seed)},
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in (1, 2)
    ]
    for run in runs:
        assert run.wait(timeout=300) == 0, run.stderr.read()
    digests = {hashlib.sha256((tmp_path / f"{seed}.safetensors").read_bytes()).hexdigest() for seed in (1, 2)}
    assert len(digests) == 1


def test_the_sorted_file_is_a_valid_safetensors_file_timm_loads(tmp_path):
    model = small_model()
    path = save_model(model, tmp_path / "m.safetensors")
    size, content = header(path)
    assert size % 8 == 0 and list(content) == sorted(content)
    assert list(content["__metadata__"]) == sorted(content["__metadata__"])
    with safe_open(str(path), framework="pt") as fh:
        assert json.loads(fh.metadata()["label_names"]) == [f"class {i}" for i in range(10)]
        assert json.loads(fh.metadata()["hardenctl"]) == model.info.metadata
    state = load_file(str(path))
    assert state.keys() == model.model.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in model.model.state_dict().items())
    plain = timm.create_model(ARCH, num_classes=10, in_chans=1, checkpoint_path=str(path)).eval()
    again = hardenctl.load_model(path)
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(again(x), model.eval()(x))
        assert torch.allclose(plain((x - 0.3) / 0.4), again(x), atol=1e-5)
    assert again.info.label_names == model.info.label_names and again.info.metadata == model.info.metadata


@pytest.mark.parametrize("indent", [1, 7])
def test_a_header_of_another_length_is_rewritten_in_front_of_the_same_data(tmp_path, indent):
    """The copying branch: a header whose sorted form has another length (here: written with indentation)."""
    model = small_model()
    canonical = save_model(model, tmp_path / "canonical.safetensors").read_bytes()
    size, content = header(tmp_path / "canonical.safetensors")
    spread = json.dumps(content, indent=indent).encode()
    spread += b" " * (-len(spread) % 8)
    odd = tmp_path / "odd.safetensors"
    odd.write_bytes(struct.pack("<Q", len(spread)) + spread + canonical[8 + size :])
    assert load_file(str(odd)).keys() == load_file(str(tmp_path / "canonical.safetensors")).keys()  # valid as it is
    sort_safetensors_header(odd)
    assert odd.read_bytes() == canonical and not list(tmp_path.glob("*.sorting"))


def test_unsorted_files_from_other_writers_still_load(tmp_path):
    model = small_model()
    state = {k: v.contiguous() for k, v in model.model.state_dict().items()}
    metadata = {"arch": ARCH, "mean": "0.3", "std": "0.4", "z": "1", "a": "2"}
    save_file(state, str(tmp_path / "other.safetensors"), metadata=metadata)
    assert hardenctl.load_model(tmp_path / "other.safetensors").info.num_classes == 10


# ---------------------------------------------------------------------------------------------
# the reported defect: two identical `hardenctl harden` runs wrote model files with other bytes
# ---------------------------------------------------------------------------------------------
TINY_HARDEN = [
    "--recipe",
    "pgd-at",
    "--data",
    "digits-train",
    "--epochs",
    "1",
    "--batch-size",
    "128",
    "--lr",
    "0.02",
    "--set",
    "eps=0.1",
    "--set",
    "attack_alpha=0.05",
    "--set",
    "attack_steps=2",
    "--set",
    "augment=none",
    "--set",
    "monitor_n=32",
    "--seed",
    "0",
    "--device",
    "cpu",
    "--eval-data",
    "digits-test",
    "--suite",
    "quick",
    "--eps",
    "0.1",
    "--eval-n",
    "8",
    "--quiet",
]


@pytest.mark.slow
def test_two_identical_harden_runs_write_the_same_model_file(cli, digits_model_path, tmp_path):
    for run in ("first", "second"):
        code, _, err = cli("harden", digits_model_path, *TINY_HARDEN, "--out", tmp_path / run)
        assert code == 0, err
    first, second = ((tmp_path / run / "model.safetensors").read_bytes() for run in ("first", "second"))
    assert first == second
    reports = [json.loads((tmp_path / run / "report.json").read_text()) for run in ("first", "second")]
    digests = [report["hardened"]["model_sha256"] for report in reports]
    assert digests[0] == digests[1] == hashlib.sha256(first).hexdigest()
