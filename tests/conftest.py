"""Shared fixtures: a tiny trained digits model and small datasets, all made on the fly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from hardenctl.cli import main
from hardenctl.data import load_dataset
from hardenctl.demo import DEMO_ARCH, DIGITS_MEAN, DIGITS_STD, train_clean
from hardenctl.models import create_timm_model, save_model, wrap_model

# Tiny models run fastest single-threaded, and tests must not fight each other (or DDP workers) for 2 cores.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def not_in_github_actions(monkeypatch):
    """A test that wants GitHub Actions sets it; otherwise an in-process run under a real GitHub runner would write
    annotations into the job's log and the test report into its step summary."""
    for name in ("GITHUB_ACTIONS", "GITHUB_STEP_SUMMARY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def digits_model_path(tmp_path_factory) -> Path:
    """timm test_resnet trained for a few epochs on digits-train (≈95% clean on digits-test)."""
    out = tmp_path_factory.mktemp("digits_model")
    torch.manual_seed(0)
    net = create_timm_model(DEMO_ARCH, num_classes=10, in_chans=1)
    model = wrap_model(net, DEMO_ARCH, 10, DIGITS_MEAN, DIGITS_STD, in_chans=1, input_size=(8, 8))
    train_clean(model, load_dataset("digits-train"), epochs=4, seed=0)
    return save_model(model, out / "model.safetensors")


@pytest.fixture(scope="session")
def digits_npz(tmp_path_factory) -> Path:
    """digits-test as an .npz (uint8 N×H×W×C), the format users hand us."""
    data = load_dataset("digits-test")
    path = tmp_path_factory.mktemp("npz") / "digits.npz"
    np.savez(path, x=data.x.permute(0, 2, 3, 1).numpy(), y=data.y.numpy())
    return path


def run_cli(*args: str, capsys=None) -> tuple[int, str, str]:
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""
    code = main([str(a) for a in args])
    if capsys is None:
        return code, "", ""
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def cli(capsys):
    return lambda *args: run_cli(*args, capsys=capsys)
