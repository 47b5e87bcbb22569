"""hardenctl: make timm image classifiers robust, and measure robustness you can trust.

The public names are imported on first use: ``import hardenctl`` (and the CLI's ``--help``) must not
pay the seconds torch and timm take to import.
"""
from __future__ import annotations

import importlib
import sys
import types
from typing import Any

from .version import __version__

_LAZY = {"evaluate": "api", "gate": "api", "harden": "api", "load_data": "api", "load_model": "api", "write_outputs": "api",
         "EvalConfig": "evaluate", "GateOptions": "gates", "Report": "report"}

__all__ = ["__version__", "evaluate", "gate", "harden", "load_data", "load_model", "write_outputs", "EvalConfig", "GateOptions",
           "Report"]


class _Package(types.ModuleType):
    """``hardenctl.evaluate`` and ``hardenctl.harden`` are the API functions, although submodules of the
    same names exist: importing a submodule must not rebind the package attribute to the module."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("evaluate", "harden") and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)

    def __getattr__(self, name: str) -> Any:
        if name in _LAZY:
            value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
            super().__setattr__(name, value)
            return value
        raise AttributeError(f"module 'hardenctl' has no attribute {name!r}")


sys.modules[__name__].__class__ = _Package
