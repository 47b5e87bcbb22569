"""The evaluation engine: run a suite, keep the worst case per sample, check for false robustness.

``config`` (EvalConfig: everything that determines a result) · ``suite`` (worst case per sample, re-scoring, the
BatchRunner protocol) · ``checks`` (sanity checks with measured limits) · ``results`` (counts, then rates) ·
``engine`` (``evaluate`` → Report). How batches run, one concern each: ``runner`` (EvalRunner, made of the parts
below) · ``sharding`` (torchrun shards) · ``resume`` (the saved state) · ``gallery`` (the report's pictures) ·
``adversarial`` (``--save-adversarial`` files) · ``watch`` (buffers and eval mode) · ``samples`` (per-sample files).
"""

from .checks import (
    FLAT_GRADIENT_LIMIT,
    LARGE_EPS,
    LARGE_EPS_ACCURACY_LIMIT,
    SQUARE_GAIN_LIMIT,
    ZERO_GRADIENT_LIMIT,
    gradient_check,
)
from .config import EvalConfig, Progress, Transferred
from .engine import evaluate
from .suite import BOUND_TOLERANCE, SuiteResult, SuiteRun, is_randomized, run_suite

__all__ = [
    "BOUND_TOLERANCE",
    "EvalConfig",
    "FLAT_GRADIENT_LIMIT",
    "LARGE_EPS",
    "LARGE_EPS_ACCURACY_LIMIT",
    "Progress",
    "SQUARE_GAIN_LIMIT",
    "SuiteResult",
    "SuiteRun",
    "Transferred",
    "ZERO_GRADIENT_LIMIT",
    "evaluate",
    "gradient_check",
    "is_randomized",
    "run_suite",
]
