"""The Python API (what notebooks and other tools import; the CLI imports nothing else, apart from the errors, the
version and the report types): load a model and data, evaluate, gate, write the files, harden.

Everything ``hardenctl eval`` can do is here: :func:`evaluate` (torchrun shards, resume state, adversarial images,
sequential gates), :func:`gate` (thresholds, a baseline report with its per-sample results, sanity-check acceptance)
and :func:`write_outputs` (JSON, Markdown, JUnit, HTML and the per-sample results). Options are the frozen objects of
:mod:`hardenctl.options`.
"""

from __future__ import annotations

from ..evaluation import EvalConfig
from ..gates import Baseline, GateOptions, describe_failure
from ..options import DataOptions, EvalRun, HardenOptions, ModelOptions
from .eval_request import EvalOutcome, EvalRequest, run_evaluation
from .evaluation import (
    check_label_names,
    evaluate,
    gate,
    load_baseline,
    load_data,
    load_model,
    prepare_data,
    sequential_plan,
    write_outputs,
)
from .training import harden, recipe_for

__all__ = [
    "Baseline",
    "DataOptions",
    "EvalConfig",
    "EvalOutcome",
    "EvalRequest",
    "EvalRun",
    "GateOptions",
    "HardenOptions",
    "ModelOptions",
    "check_label_names",
    "describe_failure",
    "evaluate",
    "gate",
    "harden",
    "load_baseline",
    "load_data",
    "load_model",
    "prepare_data",
    "recipe_for",
    "run_evaluation",
    "sequential_plan",
    "write_outputs",
]
