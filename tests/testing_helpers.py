"""Helpers shared by test modules (a uniquely named module: `conftest` is ambiguous across folders)."""
from __future__ import annotations

import json
from pathlib import Path

CIFAR_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())
