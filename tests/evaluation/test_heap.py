"""Peak memory flat in n: the C heap's free pages go back to the system around every batch (hardenctl/heap.py).

glibc keeps the blocks a batch freed resident, and the next batch's blocks land elsewhere, so without this the peak
RSS of an evaluation rose with the number of batches (issue 20 item 6: 1.15x from n = 256 to 2,560 after the
TorchScript fix; benchmarks/RESULTS.md, "Memory flat in n", second pass). What is checked here is deterministic: where
run_suite gives the pages back (the release passed in through SuiteRun, the real one by default), and that giving them
back returns freed heap pages (a subprocess that does nothing else, with a wide margin), never a measured evaluation.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import weakref

import pytest
import torch
from torch import nn

from hardenctl.attacks import Attack
from hardenctl.data import ArrayDataset
from hardenctl.evaluation import SuiteRun, suite
from hardenctl.heap import release_free_memory


def on_glibc() -> bool:
    """Whether this process runs on glibc (which has ``malloc_trim``), asked of the C library's own configuration
    rather than of the code under test."""
    try:
        return os.confstr("CS_GNU_LIBC_VERSION") is not None
    except (ValueError, OSError, AttributeError):  # no such name (macOS, Windows, musl)
        return False


class Recording(Attack):
    name = "recording"

    def __init__(self, events: list[str]):
        super().__init__(0.03)
        self.events = events

    def perturb(self, model, x, y):
        self.events.append("attack")
        return x


def test_run_suite_gives_the_freed_pages_back_before_and_after_every_batch():
    events: list[str] = []
    data = ArrayDataset(
        torch.rand(10, 3, 4, 4), torch.zeros(10, dtype=torch.long), class_names=["a", "b"], source="random"
    )
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 2))
    with torch.no_grad():  # every image classified as class 0, so every batch is attacked
        model[1].weight.zero_()
        model[1].bias.copy_(torch.tensor([1.0, 0.0]))
    run = SuiteRun([Recording(events)], 0.03, "linf", 4, release_memory=lambda: events.append("release"))
    suite.run_suite(model, data, run)
    assert events == ["release", "attack", "release"] * 3  # batches of 4, 4 and 2


def test_an_evaluation_gives_back_the_pages_with_the_real_release_unless_told_otherwise():
    assert SuiteRun([], 0.03, "linf", 4).release_memory is release_free_memory


@pytest.mark.skipif(not on_glibc(), reason="malloc_trim is glibc's: elsewhere release_free_memory does nothing")
def test_release_free_memory_returns_the_free_pages_inside_the_heap():
    """100 MiB of 64 KiB blocks (heap blocks: under glibc's mmap threshold) touched, pinned under a live block so
    free() cannot shrink the heap from the top, then freed: resident until they are given back."""
    script = textwrap.dedent("""
        import ctypes
        from hardenctl.heap import release_free_memory

        libc = ctypes.CDLL(None)
        libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
        libc.free.argtypes = [ctypes.c_void_p]

        def rss_mib():
            with open("/proc/self/status") as fh:
                return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS")) / 1024

        blocks = [libc.malloc(64 * 1024) for _ in range(1600)]
        for block in blocks:
            ctypes.memset(block, 1, 64 * 1024)
        pin = libc.malloc(64 * 1024)  # taken from the heap's top (no free block yet), above every block
        for block in blocks:
            libc.free(block)
        freed = rss_mib()
        released = release_free_memory()
        print(released, freed - rss_mib())
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "True"  # glibc: it found malloc_trim and called it
    assert float(out[1]) > 80  # MiB given back of the 100 MiB freed (not returned: ~0)


def test_release_free_memory_says_whether_it_could_give_pages_back():
    """True on glibc (every call, wherever it is made), False on a C library without ``malloc_trim``."""
    assert release_free_memory() is on_glibc()
    assert release_free_memory() is on_glibc()


class Batches:
    """A dataset whose stream notes, before making each batch, whether every earlier batch is already freed."""

    def __init__(self, n: int):
        self.y = torch.zeros(n, dtype=torch.long)
        self.alive_when_decoding: list[int] = []

    def __len__(self) -> int:
        return len(self.y)

    def batches(self, batch_size: int):
        refs: list[weakref.ref] = []
        for start in range(0, len(self), batch_size):
            self.alive_when_decoding.append(sum(ref() is not None for ref in refs))
            x = torch.rand(min(batch_size, len(self) - start), 3, 4, 4)
            refs.append(weakref.ref(x))
            yield start, x, self.y[start : start + len(x)]
            del x


def test_a_batch_is_freed_before_the_next_one_is_decoded():
    data = Batches(10)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 2))
    suite.run_suite(model, data, SuiteRun([Recording([])], 0.03, "linf", 4))
    assert data.alive_when_decoding == [0, 0, 0]  # not two batches at once (zip held the last one; so did the loop)
