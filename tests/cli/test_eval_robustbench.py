"""``eval --robustbench-json`` takes the same entry settings as ``card``: the dataset key and additional_data."""

from __future__ import annotations

import json

EVAL = ["--data", "digits-test", "--n", "8", "--attacks", "fgsm", "--eps", "0.1", "--quiet"]


def test_the_entry_takes_the_dataset_and_additional_data_from_the_flags(cli, digits_model_path, tmp_path):
    entry_path = tmp_path / "entry.json"
    code, _, err = cli(
        "eval",
        digits_model_path,
        *EVAL,
        "--robustbench-json",
        entry_path,
        "--robustbench-dataset",
        "CIFAR10",
        "--additional-data",
    )
    assert code == 0, err
    entry = json.loads(entry_path.read_text())
    assert entry["dataset"] == "cifar10" and entry["additional_data"] is True


def test_without_flags_the_entry_says_what_it_found(cli, digits_model_path, tmp_path):
    entry_path = tmp_path / "entry.json"
    code, _, err = cli("eval", digits_model_path, *EVAL, "--robustbench-json", entry_path)
    assert code == 0, err
    entry = json.loads(entry_path.read_text())
    assert (
        entry["dataset"] == "" and entry["additional_data"] is False
    )  # digits is no RobustBench set; nothing declared


def test_entry_flags_without_an_entry_are_refused(cli, digits_model_path, tmp_path):
    code, _, err = cli("eval", digits_model_path, *EVAL, "--additional-data", "--report", tmp_path / "r.json")
    assert code == 2 and err.count("\n") == 1 and "--robustbench-json" in err
    assert not (tmp_path / "r.json").exists()
    code, _, err = cli(
        "eval", digits_model_path, *EVAL, "--robustbench-json", tmp_path / "e.json", "--robustbench-dataset", "mnist"
    )
    assert code == 2 and "'mnist' is not one of RobustBench's datasets" in err and not (tmp_path / "e.json").exists()
