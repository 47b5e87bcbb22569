"""Valid reports and per-sample files, and hypothesis strategies that damage them: wrong types, NaN and infinities,
numbers out of range, deep nesting, missing fields, huge strings and numbers, unknown versions.

Shared by the readers' property tests (tests/report/test_reader.py, tests/evaluation/test_samples.py) and the CLI's
(tests/test_compare_inputs.py). A uniquely named module in tests/, importable from every test folder.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from hardenctl.report import Check, Gate, Report, SampleResults

# Placeholders for what json.dumps cannot write (it recurses, and refuses integers of more than 4,300 digits): each is
# replaced in the written text.
DEEP_LIST, DEEP_OBJECT, HUGE_INTEGER = "<<deep list>>", "<<deep object>>", "<<huge integer>>"
SPELLED = {
    json.dumps(DEEP_LIST): "[" * 5000 + "]" * 5000,
    json.dumps(DEEP_OBJECT): '{"a": ' * 40 + "1" + "}" * 40,
    json.dumps(HUGE_INTEGER): "9" * 5000,
}

# repeatable runs in CI: the same examples every time, nothing stored between runs
READER_SETTINGS = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
CLI_SETTINGS = settings(READER_SETTINGS, max_examples=25)


def eval_report(**changes: Any) -> Report:
    """A small report holding every section a report can have (per class, counts, checks, gates, ε sweep, work,
    protected classes, a paired comparison, a recipe's summary)."""
    per_class = {
        "0": {
            "name": "cat",
            "n": 4,
            "clean_accuracy": 1.0,
            "robust_accuracy": 0.5,
            "clean_correct": 4,
            "robust_correct": 2,
        },
        "1": {
            "name": "dog",
            "n": 6,
            "clean_accuracy": 5 / 6,
            "robust_accuracy": 0.5,
            "clean_correct": 5,
            "robust_correct": 3,
            "display_name": "Dog",
        },
    }
    paired = {
        "n": 10,
        "baseline": "old.json",
        "baseline_samples": "old.samples.jsonl",
        "max_drop_basis": "paired",
        "robust": {"regressed": 1, "improved": 0, "unchanged": 9, "difference": 0.1, "mcnemar_p": 1.0},
        "clean": {"regressed": 0, "improved": 0, "difference": 0.0, "mcnemar_p": 1.0},
        "regressed_samples": [
            {"index": 3, "source_id": "row 3", "label": 1, "adversarial_prediction": 0, "broken_by": "pgd"}
        ],
    }
    protected = {
        "classes": [1],
        "cost": 10.0,
        "n": 6,
        "clean_correct": 5,
        "robust_correct": 3,
        "clean_accuracy": 5 / 6,
        "robust_accuracy": 0.5,
        "cost_weighted_robust_error": 0.3,
        "names": ["dog"],
    }
    values = dict(
        schema_version="1.0",
        clean_accuracy=0.9,
        robust_accuracy=0.5,
        attacks={"fgsm": 0.6, "pgd": 0.5},
        per_class=per_class,
        n=10,
        eps=8 / 255,
        norm="linf",
        suite="custom",
        seed=0,
        model_sha256="m" * 64,
        data_sha256="d" * 64,
        versions={"hardenctl": "0.1.0", "torch": "2"},
        normalization={"mean": [0.5], "std": [0.25], "source": "checkpoint"},
        seconds=1.5,
        checks=[
            Check("perturbations_in_bounds", True, "0 outside", 0, 0),
            Check("input_gradients_nonzero", False, "half zero", 0.5, 0.01),
        ],
        gates=[Gate("max_drop_robust_accuracy", 0.05, 0.1, False, "paired"), Gate("sanity_checks", 0, 1, False)],
        attack_list=["FGSM(eps=0.03)", "PGD(eps=0.03)"],
        model={"arch": "resnet18", "path": "model.safetensors", "num_classes": 2, "input_size": [32, 32]},
        data={"source": "photos/test", "n": 10},
        eps_sweep=[{"eps": 0.0, "robust_accuracy": 0.9}, {"eps": 8 / 255, "robust_accuracy": 0.5}],
        extra={"protected": protected, "paired": paired, "recipe": {"summary": "a recipe's line"}},
        accepted_checks=[],
        samples_file="r.samples.jsonl",
        counts={"n": 10, "clean_correct": 9, "robust_correct": 5, "attacks": {"fgsm": 6, "pgd": 5}},
        work={"fgsm": {"seconds": 0.5, "forward_passes": 20, "backward_passes": 10, "attacked": 9, "broken": 3}},
        execution={"search_precision": "fp32", "verdict_precision": "fp32", "batch_size": 10},
    )
    values.update(changes)
    return Report(**values)


def eval_dict(**changes: Any) -> dict[str, Any]:
    return json.loads(eval_report(**changes).to_json())


def harden_dict() -> dict[str, Any]:
    """A harden report as `hardenctl harden --out` writes it (the fields the card reads, two evaluations)."""
    return {
        "schema_version": "harden-1.0",
        "recipe": "trades",
        "recipe_source": "recipes/trades.yaml",
        "profile": "finetune",
        "recipe_config": {"epochs": 2, "lr": 0.01},
        "selected": "best",
        "selected_epoch": 1,
        "best_epoch": 1,
        "last_epoch": 2,
        "input": eval_dict(robust_accuracy=0.1),
        "hardened": eval_dict(),
        "other": None,
        "history": [{"epoch": 1, "loss": 1.5}],
        "input_checkpoint": {"path": "model.safetensors"},
        "data": {"train": "photos/train", "eval": "photos/test", "train_n": 100, "holdout_n": 20},
        "runtime": {},
        "notes": [],
        "selected_by": "robust",
        "extra_evaluations": {},
        "decisions": ["lr 0.01 (auto)"],
    }


def sample_rows(n: int = 10) -> list[dict[str, Any]]:
    """Rows that agree with :func:`eval_report`'s counts: labels 0 ×4, 1 ×6; 9 clean-correct, 5 robust."""
    robust = [True, True, False, False, True, True, True, False, False, False]
    clean = [1.0] * 9 + [0.0]
    labels = [0] * 4 + [1] * 6
    results = SampleResults(
        index=list(range(n)),
        source_id=[f"row {i}" for i in range(n)],
        label=labels,
        clean_prediction=[lab if c else 1 - lab for lab, c in zip(labels, clean)],
        clean_correct=clean,
        robust=robust,
        broken_by=[None if r or not c else "pgd" for r, c in zip(robust, clean)],
        adversarial_prediction=[lab if r else 1 - lab for lab, r in zip(labels, robust)],
    )
    return results.rows()


def write_json_text(value: Any) -> str:
    """``value`` as the JSON a file would hold (a string as it is), NaN and infinities as Python writes them,
    placeholders spelled out."""
    text = value if isinstance(value, str) else json.dumps(value)
    for placeholder, spelled in SPELLED.items():
        text = text.replace(placeholder, spelled)
    return text


def write_report(path: Path, value: Any) -> Path:
    path.write_text(write_json_text(value), encoding="utf-8")
    return path


def write_lines(path: Path, items: list[Any]) -> Path:
    """A per-sample results file: each item one line (a string as it is, anything else as JSON)."""
    path.write_text("".join(write_json_text(item) + "\n" for item in items), encoding="utf-8")
    return path


# -- strategies -----------------------------------------------------------------------------------------------------
HOSTILE_VALUES = st.one_of(
    st.sampled_from([float("nan"), float("inf"), float("-inf")]),  # what testers found passing gates: often
    st.sampled_from(
        [
            -1,
            -0.5,
            1.5,
            5.0,
            0,
            1,
            1e300,
            2**70,
            True,
            False,
            None,
            "",
            "abc",
            "1.0",
            "2.0",
            "0.1",
            "linf",
            "x" * 20_000,
            [],
            {},
            [1],
            [0.9, 0.1],
            {"a": 1},
            DEEP_LIST,
            DEEP_OBJECT,
            HUGE_INTEGER,
        ]
    ),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.lists(st.one_of(st.integers(-5, 5), st.floats(allow_nan=True), st.text(max_size=3)), max_size=3),
    st.dictionaries(
        st.text(max_size=4), st.one_of(st.integers(-5, 5), st.floats(allow_nan=True), st.none()), max_size=3
    ),
)
VERSIONS = st.one_of(
    st.sampled_from(["1.0", "2.0", "0.1", "1.1", "harden-1.0", "harden-2.0", "", "1", "v1.0"]),
    st.text(max_size=8),
    st.floats(allow_nan=True),
    st.none(),
)


CENTRAL_FIELDS = (
    "clean_accuracy",
    "robust_accuracy",
    "n",
    "eps",
    "norm",
    "suite",
    "attacks",
    "per_class",
    "counts",
    "checks",
    "data_sha256",
    "samples_file",
    "input",
    "hardened",
    "recipe",
)


def paths_of(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every place in a JSON value that can be replaced or deleted (the keys and indexes leading to it)."""
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, child in value.items():
            found += paths_of(child, prefix + (key,))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += paths_of(child, prefix + (index,))
    return found


def _apply(value: Any, mutation: tuple) -> Any:
    kind, path, new = mutation
    if kind == "version":
        if isinstance(value, dict):
            value["schema_version"] = new
        return value
    parent = value
    for key in path[:-1]:
        parent = parent[key]
    if kind == "delete":
        del parent[path[-1]]
    else:
        parent[path[-1]] = new
    return value


@st.composite
def damaged(draw: st.DrawFn, valid: dict[str, Any], mutations: int = 3) -> Any:
    """``valid`` with up to ``mutations`` changes: a field replaced by a hostile value or deleted, the version changed;
    now and then none (the valid report itself), or the whole file replaced."""
    value = copy.deepcopy(valid)
    if draw(st.integers(0, 19)) == 0:
        return draw(HOSTILE_VALUES)
    for _ in range(draw(st.integers(0, mutations))):
        paths = paths_of(value)
        if not paths:
            break
        kind = draw(st.sampled_from(["replace"] * 6 + ["delete"] * 2 + ["version"]))
        new = draw(VERSIONS if kind == "version" else HOSTILE_VALUES)
        # the fields every command reads as often as all the others together (a random path is mostly deep in a section)
        central = [path for path in paths if path[-1] in CENTRAL_FIELDS and len(path) <= 2]
        path = draw(st.one_of(st.sampled_from(central), st.sampled_from(paths)) if central else st.sampled_from(paths))
        value = _apply(value, (kind, path, new))
    return value


@st.composite
def damaged_lines(draw: st.DrawFn, header: dict[str, Any], rows: list[dict[str, Any]]) -> list[Any]:
    """A per-sample results file's lines with up to three changes: a header or row field replaced or deleted, a line
    deleted, repeated, swapped or replaced by text that is not JSON."""
    lines: list[Any] = [copy.deepcopy(header), *copy.deepcopy(rows)]
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(
            st.sampled_from(["replace", "replace", "delete field", "drop line", "repeat line", "swap", "garbage"])
        )
        if not lines:
            break
        at = draw(st.integers(0, len(lines) - 1))
        line = lines[at]
        if kind in ("replace", "delete field") and isinstance(line, dict) and line:
            key = draw(st.sampled_from(sorted(line)))
            if kind == "replace":
                line[key] = draw(HOSTILE_VALUES)
            else:
                del line[key]
        elif kind == "drop line":
            del lines[at]
        elif kind == "repeat line":
            lines.insert(at, copy.deepcopy(line))
        elif kind == "swap":
            other = draw(st.integers(0, len(lines) - 1))
            lines[at], lines[other] = lines[other], lines[at]
        elif kind == "garbage":
            lines[at] = draw(st.sampled_from(["", "{not json", "[1, 2]", "NaN", "x" * 70_000, json.dumps(DEEP_LIST)]))
    return lines
