"""Atomic outputs: all or nothing, with ordinary permissions."""

from __future__ import annotations

import os
import stat

import pytest

from hardenctl.files import atomic_path, atomic_write


def test_failed_write_leaves_nothing_and_keeps_the_old_file(tmp_path):
    target = tmp_path / "report.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_written_file_has_umask_permissions(tmp_path):
    target = tmp_path / "out" / "model.txt"
    atomic_write(target, "data")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
    assert target.read_text() == "data"


def test_a_saved_model_has_umask_permissions(tmp_path):
    """safetensors writes its file anew (0600 from its own temp file): the mode is set after the writer is done."""
    from safetensors.torch import load_file

    from hardenctl.models import create_timm_model, save_model, wrap_model

    net = create_timm_model("test_resnet", num_classes=3, in_chans=1)
    path = save_model(
        wrap_model(net, "test_resnet", 3, (0.5,), (0.25,), in_chans=1, input_size=(8, 8)),
        tmp_path / "model.safetensors",
    )
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert load_file(path)  # and it is still a whole safetensors file
