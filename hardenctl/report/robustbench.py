"""A RobustBench-style ``model_info`` entry, so a model can be set beside the leaderboard's entries field by field.

RobustBench's fields (``clean_acc``, ``autoattack_acc`` as percent strings with two decimals, ``eps`` as "8/255",
``additional_data``, ``number_forward_passes``, ...) are filled from a report; what RobustBench's maintainers fill by
hand (paper, authors, venue) is left empty. ``autoattack_acc`` is hardenctl's ``standard`` suite unless the report
used ``--suite autoattack``: the footnote and the ``hardenctl`` section say which, on how many images, with which seed.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..files import atomic_write

from .common import format_eps

SUITES = {"standard": "hardenctl's standard suite (APGD-CE, APGD-T, Square: AutoAttack's standard attacks, hardenctl's "
                      "implementation), not the reference autoattack package",
          "autoattack": "the reference autoattack package (standard version)",
          "quick": "hardenctl's quick suite (PGD-20 + APGD-CE): weaker than AutoAttack, not comparable with the leaderboard"}


def dataset_name(source: str | None) -> str:
    """RobustBench's dataset key when the data is recognisably one of its sets, else the data source as given."""
    text = (source or "").lower().replace("-", "").replace("_", "")
    for key in ("cifar100", "cifar10", "imagenet"):
        if key in text:
            return key
    return source or ""


def robustbench_entry(report: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    """The entry for an eval report, or for the hardened model of a harden report."""
    result = report["hardened"] if "hardened" in report and "input" in report else report
    model = result.get("model") or {}
    suite = str(result.get("suite"))
    failed = [c["name"] for c in result.get("checks") or [] if not c.get("passed", True)]
    return {
        "link": "", "name": name or f"{model.get('arch', 'model')} (hardenctl)", "authors": "",
        "additional_data": False, "number_forward_passes": 1, "dataset": dataset_name((result.get("data") or {}).get("source")),
        "venue": "", "architecture": model.get("arch", ""), "eps": format_eps(result.get("eps"), decimal=False),
        "clean_acc": f"{100 * float(result['clean_accuracy']):.2f}", "reported": "",
        "autoattack_acc": f"{100 * float(result['robust_accuracy']):.2f}",
        "footnote": (f"Robust accuracy from {SUITES.get(suite, 'a custom attack list: ' + suite)}, on the first "
                     f"{result.get('n')} images (RobustBench evaluates the full test set), seed {result.get('seed')}."
                     + (f" Failed sanity checks: {', '.join(failed)}." if failed else "")),
        "unreliable": bool(failed),
        "hardenctl": {"suite": suite, "norm": result.get("norm"), "eps": result.get("eps"), "n": result.get("n"),
                      "seed": result.get("seed"), "intervals": result.get("intervals"), "counts": result.get("counts"),
                      "model_sha256": result.get("model_sha256"), "data_sha256": result.get("data_sha256"),
                      "randomized": result.get("randomized", False), "eot_samples": result.get("eot_samples", 1),
                      "failed_checks": failed, "version": (result.get("versions") or {}).get("hardenctl")},
    }


def write_entry(report: dict[str, Any], path: str | Path, name: str | None = None) -> None:
    """Write :func:`robustbench_entry` as JSON, atomically."""
    atomic_write(path, json.dumps(robustbench_entry(report, name), indent=2) + "\n")
