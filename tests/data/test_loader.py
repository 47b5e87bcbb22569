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
    if local_ranks is None:
        monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    else:
        monkeypatch.setenv("LOCAL_WORLD_SIZE", local_ranks)
    assert default_workers(cores) == expected <= MAX_WORKERS


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="CPU affinity is Linux's")
def test_without_a_count_the_share_is_of_the_cores_this_process_may_use(monkeypatch):
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert default_workers() == max(1, min(len(os.sched_getaffinity(0)), MAX_WORKERS))
