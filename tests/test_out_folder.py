"""What a harden ``--out`` may be: refused before any work when in use, under torchrun only by rank 0."""

from __future__ import annotations

import pytest

from hardenctl.errors import UserError
from hardenctl.files import FolderLock
from hardenctl.out_folder import check_out_dir


def test_a_folder_in_use_is_refused_naming_the_holder(tmp_path, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    with FolderLock(tmp_path / "out", "--out"):
        with pytest.raises(UserError, match="in use by another hardenctl run"):
            check_out_dir(tmp_path / "out", resume=False)


def test_under_torchrun_another_rank_does_not_take_rank_0s_lock_for_a_strangers(tmp_path, monkeypatch):
    """Rank 0 takes the lock once it has checked; rank 1, checking a moment later, must not refuse the run."""
    with FolderLock(tmp_path / "out", "--out"):
        monkeypatch.setenv("RANK", "1")
        check_out_dir(tmp_path / "out", resume=False)
        monkeypatch.setenv("RANK", "0")
        with pytest.raises(UserError, match="in use"):
            check_out_dir(tmp_path / "out", resume=False)
