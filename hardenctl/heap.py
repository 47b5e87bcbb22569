"""Giving the C heap's free pages back to the system around every batch, so an evaluation's peak memory is flat in n.

Why: glibc's malloc raises its mmap threshold (up to 32 MiB) each time it frees a block it had mapped, so from the
second batch on every tensor under 32 MiB (a batch's mid-size activations, decoded photos, the attacks' copies) comes
from the heap. A freed heap block stays resident and the next batch's blocks land at other addresses, so the heap's
free-but-resident pages added up: measured on an evaluation of 20 batches of 128 photos (resnet10t, 160 px;
``benchmarks/RESULTS.md``, "Memory flat in n", second pass) the heap's free bytes grew from ~140 to ~350 MB while its
bytes in use stayed at 250-330 MB, and the peak RSS was 1.04-1.15x higher at n = 2,560 than at n = 256.
``malloc_trim(0)`` once the batch's images have arrived and once it is done returns every free page inside the heap
(``madvise``), so each batch starts from the memory in use: 1,448 / 1,452 MB (1.003x), in the noise of the CPU time.
Fixing the mmap threshold instead (``mallopt``) is as flat but maps and faults every large tensor on every pass:
+24 % CPU time, so it is not done.

Other C libraries (macOS, Windows, musl) have no ``malloc_trim``: there this does nothing.
"""

from __future__ import annotations

import ctypes
import functools
import sys
from typing import Callable


@functools.lru_cache(maxsize=1)
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library has none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        trim = ctypes.CDLL(None).malloc_trim  # the C library this process runs on (no ldconfig look-up)
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def release_free_memory() -> bool:
    """Return the C heap's free pages to the system (glibc ``malloc_trim(0)``); False where that is not possible.

    Cheap (a walk over the heap's free lists and one ``madvise`` per free run of pages); called before and after every
    batch of :func:`~hardenctl.evaluation.suite.run_suite`.
    """
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
