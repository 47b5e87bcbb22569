"""Models: checkpoint I/O, the data config that travels with a model, and the normalised classifier.

``metadata`` parses what exporters write (``declared`` says which parser reads which key), ``data_config``
resolves how images are prepared (all without torch, so the CLI can check flags before importing it),
``sources`` finds files, folders and hf-hub models, ``checkpoint`` reads files without unpickling code,
``classifier`` is the [0, 1]-pixel wrapper every attack sees, ``load`` builds timm models and saves them. Names are
imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TORCH_SUFFIXES": "checkpoint",
    "ImageClassifier": "classifier",
    "ModelInfo": "classifier",
    "wrap_model": "classifier",
    "DataConfig": "data_config",
    "build_data_config": "data_config",
    "create_timm_model": "load",
    "load_model": "load",
    "resolve_device": "load",
    "save_model": "save",
    "timm_cfg": "load",
    "write_config_json": "save",
    "parse_metadata": "declared",
    "ModelSource": "sources",
    "resolve_source": "sources",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
