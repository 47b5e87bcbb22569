"""What the benchmark scripts share: where the data and RESULTS.md are, the normalisations, RESULTS.md's section
update, a minutes log and the timing loops.

It imports neither torch nor the package's heavy modules, so a script that must set ``OMP_NUM_THREADS`` before torch
loads (``bench_checks.py``) or that times start-up (``bench_cli_startup.py``) can import it first. The scripts run as
``python benchmarks/NAME.py``, which puts this folder on ``sys.path``: ``from common import ...`` needs nothing else.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

from hardenctl.files import atomic_write

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
if (
    not DATA.is_dir()
):  # a copy of the tree elsewhere (e.g. a snapshot that other engineers' edits cannot reach) still finds it
    DATA = Path("/work/shared/data")
CIFAR = DATA / "cifar10"
IMAGEWOOF = DATA / "imagewoof"
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def update_section(heading: str, section: str, results: Path = RESULTS) -> None:
    """Replace (or append) the section under ``heading`` in RESULTS.md, leaving every other section as it is: several
    benchmarks write their own sections of the one file, some while others run."""
    text = results.read_text() if results.exists() else "# Benchmark results\n"
    start = text.find(heading)
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + len(heading))
        text = text[:start] + section.rstrip("\n") + ("\n\n" + text[end + 1 :] if end >= 0 else "")
    atomic_write(results, text.rstrip("\n") + "\n")


def minutes_log() -> Callable[[str], None]:
    """A ``log`` that prefixes each line with the minutes since it was made: long runs are read while they run."""
    started = time.time()

    def log(message: str) -> None:
        print(f"[{(time.time() - started) / 60:5.1f} min] {message}", flush=True)

    return log


def run_times(fn: Callable[[], object], repeats: int) -> list[float]:
    """Wall seconds of each of ``repeats`` calls of ``fn`` (no warm-up: the caller decides whether the first counts)."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return times


def median_seconds(fn: Callable[[], object], repeats: int, warmup: bool = True) -> float:
    """Median wall seconds of ``repeats`` calls, after one untimed call that pays the one-off set-up (kernels,
    caches)."""
    if warmup:
        fn()
    return statistics.median(run_times(fn, repeats))
