"""Loader worker defaults."""

from __future__ import annotations

import os

import pytest

from hardenctl.data import default_workers
from hardenctl.data.loader import MAX_WORKERS


@pytest.mark.parametrize(
    "cores, local_ranks, expected",
    [(16, None, 8), (16, "1", 8), (16, "4", 4), (16, "8", 2), (16, "32", 1), (2, "2", 1), (4, "bad", 4)],
)
def test_torchrun_ranks_share_the_node_s_cores(monkeypatch, cores, local_ranks, expected):
    """Each local rank starts its own loader: N ranks × all cores would oversubscribe the node N times."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    if local_ranks is None:
        monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    else:
        monkeypatch.setenv("LOCAL_WORLD_SIZE", local_ranks)
    assert default_workers() == expected <= MAX_WORKERS
