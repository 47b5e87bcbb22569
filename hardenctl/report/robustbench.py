"""A RobustBench-style ``model_info`` entry, so a model can be set beside the leaderboard's entries field by field.

RobustBench's fields (``clean_acc``, ``autoattack_acc`` as percent strings with two decimals, ``eps`` as "8/255",
``additional_data``, ``number_forward_passes``, ...) are filled from a report; what RobustBench's maintainers fill by
hand (paper, authors, venue) is left empty. ``autoattack_acc`` is hardenctl's ``standard`` suite unless the report
used ``--suite autoattack``: the footnote and the ``hardenctl`` section say which, on how many images, with which seed.

The file belongs in the RobustBench repository at ``model_info/<dataset>/<threat model>/<Name>.json``
(:func:`destination`); :func:`robustbench_entry` returns the notes that say so and which fields are the user's.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Sequence

from ..errors import UserError
from ..files import atomic_write
from .card_inputs import checked_accuracy, checked_threat, describe_source
from .common import format_eps

SUITES = {
    "standard": "hardenctl's standard suite (APGD-CE, APGD-T, Square: AutoAttack's standard attacks, hardenctl's "
    "implementation), not the reference autoattack package",
    "autoattack": "the reference autoattack package (standard version)",
    "quick": "hardenctl's quick suite (PGD-20 + APGD-CE): weaker than AutoAttack, not comparable with the leaderboard",
}
# RobustBench's dataset keys and the names their data goes by (a file or folder name, a Hub dataset id); a name
# matches only as a whole (after dropping a split suffix such as -test or _val): imagenette2 is not imagenet
DATASET_SPELLINGS = {
    "cifar10": ("cifar10", "cifar-10", "cifar_10", "cifar-10-batches-py", "cifar-10-python", "uoft-cs/cifar10"),
    "cifar100": ("cifar100", "cifar-100", "cifar_100", "cifar-100-python", "uoft-cs/cifar100"),
    "imagenet": (
        "imagenet",
        "imagenet-1k",
        "imagenet1k",
        "imagenet_1k",
        "ilsvrc2012",
        "ilsvrc-2012",
        "ilsvrc2012_img_val",
        "ilsvrc/imagenet-1k",
    ),
}
THREAT_MODELS = {"linf": "Linf", "l2": "L2"}  # RobustBench's third, corruptions, is not what hardenctl measures
FIELDS_TO_FILL = "link, name, authors, venue and reported"
_SPLIT_SUFFIX = re.compile(r"[-_.](test|val|valid|validation|eval)$")


def robustbench_dataset(name: str | None) -> str | None:
    """RobustBench's key for a data set's name (``cifar-10-batches-py``, ``uoft-cs/cifar10``, ``imagenet-1k``)."""
    text = (name or "").strip().lower()
    for candidate in (text, _SPLIT_SUFFIX.sub("", text)):
        for key, spellings in DATASET_SPELLINGS.items():
            if candidate in spellings:
                return key
    return None


def check_dataset_key(value: str) -> str:
    """A ``--robustbench-dataset`` value: one of RobustBench's keys (or a known spelling of one)."""
    key = value if value in DATASET_SPELLINGS else robustbench_dataset(value)
    if key is None:
        raise UserError(
            f"--robustbench-dataset {value!r} is not one of RobustBench's datasets",
            f"pass one of {', '.join(DATASET_SPELLINGS)}",
        )
    return key


def destination(dataset: str, norm: str | None) -> str:
    """Where the entry goes in the RobustBench repository; ``<Name>`` is the leaderboard id its authors choose."""
    return f"model_info/{dataset or '<dataset>'}/{THREAT_MODELS.get(str(norm), '<threat model>')}/<Name>.json"


def additional_data(
    trained_on: Sequence[str], dataset: str | None, hub_dataset: str | None = None, train_source: Any = None
) -> tuple[bool, str]:
    """Whether the model saw data besides the evaluated set, as RobustBench's ``additional_data`` means it, and why.

    The rule: true when the model declares training data (its card's ``datasets:`` or a timm pretrained tag such as
    ``in21k``, as :mod:`hardenctl.models.provenance` reads them) that is not the evaluated data set (RobustBench's
    ``dataset``, or the ``--dataset`` Hub id), or when a harden run trained on a different RobustBench data set; when
    the evaluated set is unknown, any declared training data counts (the cautious answer for a leaderboard).
    ImageNet pre-training of a CIFAR model is additional data. A model that declares nothing is false: hardenctl
    cannot see pre-training nobody wrote down, so the note says to pass ``--additional-data`` then.
    """
    evaluated = set(DATASET_SPELLINGS.get(dataset or "", ())) | ({hub_dataset.lower()} if hub_dataset else set())
    other = [
        name
        for name in trained_on
        if name.lower() not in evaluated and (not dataset or robustbench_dataset(name) != dataset)
    ]
    if other:
        return True, f"the model declares training data besides the evaluated set: {', '.join(other)}"
    trained = robustbench_dataset(describe_source(train_source).stem) if train_source is not None else None
    if trained and dataset and trained != dataset:
        return True, f"it was hardened on {trained}, evaluated on {dataset}"
    return False, "the model declares no training data besides the evaluated set"


def robustbench_entry(
    report: dict[str, Any],
    name: str | None = None,
    *,
    dataset: str | None = None,
    additional: bool | None = None,
    trained_on: Sequence[str] = (),
    hub_dataset: str | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """The entry for an eval report, or for the hardened model of a harden report, and the notes to print.

    Args:
        report: the report as ``report.json`` holds it (an eval or a harden report).
        name: the entry's ``name`` (default: the architecture, "(hardenctl)").
        dataset: RobustBench's key (default: recognised from the data source's name, else from ``hub_dataset``,
            else empty).
        additional: ``additional_data`` as the user states it (default: :func:`additional_data`'s rule on
            ``trained_on``).
        trained_on: what the model declares it was trained on (its card's ``datasets:``, a timm pretrained tag).
        hub_dataset: the Hub id of the evaluation data (``--dataset``).
    """
    harden = "hardened" in report and "input" in report
    result = report["hardened"] if harden else report
    where = "hardened." if harden else ""
    clean = checked_accuracy(result, "clean_accuracy", where)
    robust = checked_accuracy(result, "robust_accuracy", where)
    checked_threat(result, where)
    source = describe_source(report.get("data", {}).get("eval") if harden else (result.get("data") or {}).get("source"))
    key = dataset or robustbench_dataset(source.stem) or robustbench_dataset(hub_dataset)
    if additional is None:
        train_source = (report.get("data") or {}).get("train") if harden else None
        additional, why = additional_data(trained_on, key, hub_dataset, train_source)
    else:
        why = "as you stated it"
    model = result.get("model") or {}
    failed = _failed_checks(result)
    entry = {
        "link": "",
        "name": name or f"{model.get('arch', 'model')} (hardenctl)",
        "authors": "",
        "additional_data": additional,
        "number_forward_passes": 1,
        "dataset": key or "",
        "venue": "",
        "architecture": model.get("arch", ""),
        "eps": format_eps(result.get("eps"), decimal=False),
        "clean_acc": f"{100 * clean:.2f}",
        "reported": "",
        "autoattack_acc": f"{100 * robust:.2f}",
        "footnote": _footnote(result, failed),
        "unreliable": bool(failed),
        "hardenctl": _hardenctl_section(result, failed),
    }
    return entry, _notes(additional, why, key, source.name, result.get("norm"))


def _failed_checks(result: dict[str, Any]) -> list[str]:
    checks = [c for c in result.get("checks") or [] if isinstance(c, dict)]
    return [str(c.get("name")) for c in checks if not c.get("passed", True)]


def _footnote(result: dict[str, Any], failed: list[str]) -> str:
    """Which attacks the robust accuracy comes from, on how many images, and the failed sanity checks."""
    suite = str(result.get("suite"))
    return (
        f"Robust accuracy from {SUITES.get(suite, 'a custom attack list: ' + suite)}, on the first "
        f"{result.get('n')} images (RobustBench evaluates the full test set), seed {result.get('seed')}."
        + (f" Failed sanity checks: {', '.join(failed)}." if failed else "")
    )


def _hardenctl_section(result: dict[str, Any], failed: list[str]) -> dict[str, Any]:
    """What a reader needs to redo or weigh the evaluation: the threat model, n, seed, intervals, counts, hashes."""
    return {
        "suite": str(result.get("suite")),
        "norm": result.get("norm"),
        "eps": result.get("eps"),
        "n": result.get("n"),
        "seed": result.get("seed"),
        "intervals": result.get("intervals"),
        "counts": result.get("counts"),
        "model_sha256": result.get("model_sha256"),
        "data_sha256": result.get("data_sha256"),
        "randomized": result.get("randomized", False),
        "eot_samples": result.get("eot_samples", 1),
        "failed_checks": failed,
        "version": (result.get("versions") or {}).get("hardenctl"),
    }


def _notes(additional: bool, why: str, key: str | None, source_name: str, norm: Any) -> list[str]:
    """What the user should know: how additional_data was decided, an unrecognised dataset, where the file goes."""
    notes = [
        f"RobustBench entry: additional_data is {str(additional).lower()} ({why}); "
        "pass --additional-data or --no-additional-data to state it"
    ]
    if not key:
        notes.append(
            f"RobustBench entry: dataset left empty: the data {source_name!r} is not recognisably one of "
            f"{', '.join(DATASET_SPELLINGS)}; pass --robustbench-dataset if it is"
        )
    notes.append(
        f"RobustBench entry: it goes in the RobustBench repository as {destination(key or '', norm)} "
        f"(<Name>: the model's leaderboard id, e.g. Smith2024Robust); fill {FIELDS_TO_FILL} by hand"
    )
    return notes


def entry_json(entry: dict[str, Any]) -> str:
    """The entry as strict JSON: RobustBench's tools read it, and NaN is not JSON."""
    try:
        return json.dumps(entry, indent=2, allow_nan=False) + "\n"
    except ValueError:
        raise UserError(
            "the report holds a number that is not finite (NaN or infinity) among the values the "
            "RobustBench entry copies (intervals, counts, eps)",
            "pass a report.json written by hardenctl eval or harden",
        ) from None


def write_entry(report: dict[str, Any], path: str | Path, name: str | None = None, **options: Any) -> list[str]:
    """Write :func:`robustbench_entry` as JSON, atomically; returns its notes (``options``: its keyword arguments)."""
    entry, notes = robustbench_entry(report, name, **options)
    atomic_write(path, entry_json(entry))
    return notes
