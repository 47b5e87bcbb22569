"""The Python API (what notebooks and other tools import; the CLI imports nothing else, apart from the errors, the
version and the report types): load a model and data, evaluate, gate, write the files, harden.

Everything ``hardenctl eval`` can do is here: :func:`evaluate` (torchrun shards, resume state, adversarial images,
sequential gates), :func:`gate` (thresholds, a baseline report with its per-sample results, sanity-check acceptance)
and :func:`write_outputs` (JSON, Markdown, JUnit, HTML and the per-sample results). Options are the frozen objects of
:mod:`hardenctl.options`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..evaluation import EvalConfig
    from ..files import atomic_write, check_output_dir, check_output_file
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
    from .release import (
        CardRequest,
        compare,
        describe_model,
        describe_recipe,
        model_card,
        recipes,
        robustbench_entry,
        write_card,
        write_comparison,
        write_robustbench_entry,
    )
    from .training import describe_epoch, harden, percent, recipe_for

# Each name is imported from its module on first use, as hardenctl's own names are: `hardenctl recipes`, `compare`
# and `card` import this package's release module and must not pay the seconds torch and timm take to import.
_SOURCES = {
    "EvalConfig": "..evaluation",
    "atomic_write": "..files",
    "check_output_dir": "..files",
    "check_output_file": "..files",
    "Baseline": "..gates",
    "GateOptions": "..gates",
    "describe_failure": "..gates",
    "DataOptions": "..options",
    "EvalRun": "..options",
    "HardenOptions": "..options",
    "ModelOptions": "..options",
    "EvalOutcome": ".eval_request",
    "EvalRequest": ".eval_request",
    "run_evaluation": ".eval_request",
    "check_label_names": ".evaluation",
    "evaluate": ".evaluation",
    "gate": ".evaluation",
    "load_baseline": ".evaluation",
    "load_data": ".evaluation",
    "load_model": ".evaluation",
    "prepare_data": ".evaluation",
    "sequential_plan": ".evaluation",
    "write_outputs": ".evaluation",
    "CardRequest": ".release",
    "compare": ".release",
    "describe_model": ".release",
    "describe_recipe": ".release",
    "model_card": ".release",
    "recipes": ".release",
    "robustbench_entry": ".release",
    "write_card": ".release",
    "write_comparison": ".release",
    "write_robustbench_entry": ".release",
    "describe_epoch": ".training",
    "percent": ".training",
    "harden": ".training",
    "recipe_for": ".training",
}

__all__ = [
    "Baseline",
    "CardRequest",
    "DataOptions",
    "EvalConfig",
    "EvalOutcome",
    "EvalRequest",
    "EvalRun",
    "GateOptions",
    "HardenOptions",
    "ModelOptions",
    "atomic_write",
    "check_label_names",
    "check_output_dir",
    "check_output_file",
    "compare",
    "describe_failure",
    "describe_epoch",
    "describe_model",
    "describe_recipe",
    "evaluate",
    "gate",
    "harden",
    "load_baseline",
    "load_data",
    "load_model",
    "model_card",
    "percent",
    "prepare_data",
    "recipe_for",
    "recipes",
    "robustbench_entry",
    "run_evaluation",
    "sequential_plan",
    "write_card",
    "write_comparison",
    "write_outputs",
    "write_robustbench_entry",
]


def __getattr__(name: str) -> Any:
    if name in _SOURCES:
        value = getattr(importlib.import_module(_SOURCES[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
