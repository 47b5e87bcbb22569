"""hardenctl: make timm image classifiers robust, and measure robustness you can trust.

The public names are imported on first use: ``import hardenctl`` (and the CLI's ``--help``) must not pay the seconds
torch and timm take to import. ``hardenctl.evaluate`` and ``hardenctl.harden`` are the API functions; the engines
behind them are the packages ``hardenctl.evaluation`` and ``hardenctl.training``.
"""

from __future__ import annotations

import importlib
from typing import Any

from .version import __version__

_LAZY = {
    "evaluate": "api",
    "gate": "api",
    "harden": "api",
    "load_data": "api",
    "load_model": "api",
    "write_outputs": "api",
    "EvalConfig": "evaluation",
    "GateOptions": "gates",
    "Report": "report",
    "DataOptions": "options",
    "EvalRun": "options",
    "HardenOptions": "options",
    "ModelOptions": "options",
    "DEMO_EPS": "demo",
    "DEMO_MART": "demo",
    "harden_demo_model": "demo",
    "make_demo_model": "demo",
}

__all__ = [
    "__version__",
    "evaluate",
    "gate",
    "harden",
    "load_data",
    "load_model",
    "write_outputs",
    "EvalConfig",
    "GateOptions",
    "Report",
    "DataOptions",
    "EvalRun",
    "HardenOptions",
    "ModelOptions",
    "DEMO_EPS",
    "DEMO_MART",
    "harden_demo_model",
    "make_demo_model",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'hardenctl' has no attribute {name!r}")
