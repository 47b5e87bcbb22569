"""The RobustBench entry: its dataset matched by whole names, additional_data by a stated rule, and where it goes."""

from __future__ import annotations

import pytest
from report_helpers import hostile_report

from hardenctl.errors import UserError
from hardenctl.report.robustbench import additional_data, check_dataset_key, robustbench_dataset, robustbench_entry


@pytest.mark.parametrize(
    "source, key",
    [
        ("/home/a/cifar-10-batches-py (test)", "cifar10"),
        ("cifar10_test.npz", "cifar10"),
        ("uoft-cs/cifar10", "cifar10"),
        ("/data/cifar-100-python (test)", "cifar100"),
        ("/data/imagenet/val", "imagenet"),
        ("ILSVRC2012_img_val.tar", "imagenet"),
        ("/data/imagenette2/val", ""),
        ("imagenette2.npz", ""),
        ("cifar10-c.npz", ""),
        ("my-cifar10-photos", ""),
        ("digits-test", ""),
    ],
)
def test_the_dataset_is_one_of_robustbench_s_by_its_whole_name(source, key):
    report = hostile_report().to_dict()
    report["data"] = {"source": source}
    entry, notes = robustbench_entry(report)
    assert entry["dataset"] == key
    assert any(f"model_info/{key or '<dataset>'}/Linf/<Name>.json" in note for note in notes)
    assert any("fill link, name, authors, venue and reported" in note for note in notes)
    assert any("dataset left empty" in note for note in notes) == (not key)


def test_a_stated_dataset_wins_and_an_unknown_one_is_refused():
    report = hostile_report().to_dict()
    report["data"] = {"source": "photos/"}
    assert robustbench_entry(report, dataset=check_dataset_key("cifar-10"))[0]["dataset"] == "cifar10"
    with pytest.raises(UserError, match="--robustbench-dataset 'imagenette' is not one of RobustBench's datasets"):
        check_dataset_key("imagenette")
    assert robustbench_dataset("imagenette2") is None


@pytest.mark.parametrize(
    "trained_on, dataset, hub, expected",
    [
        (["imagenet-1k"], "cifar10", None, True),  # ImageNet pre-training of a CIFAR model
        (["imagenet-21k", "imagenet-1k"], "imagenet", None, True),  # a timm in21k tag
        (["imagenet-1k"], "imagenet", None, False),
        (["cifar10", "uoft-cs/cifar10"], "cifar10", None, False),
        (["org/my-photos"], None, "org/my-photos", False),
        (["imagenet-1k"], None, None, True),  # evaluated set unknown: declared data counts
        ([], "cifar10", None, False),
    ],
)
def test_additional_data_follows_what_the_model_declares(trained_on, dataset, hub, expected):
    assert additional_data(trained_on, dataset, hub)[0] is expected


def test_additional_data_when_hardened_on_another_set_and_when_stated():
    assert additional_data([], "cifar10", None, "/d/imagenet/train")[0] is True
    report = hostile_report().to_dict()
    report["data"] = {"source": "cifar10.npz"}
    assert robustbench_entry(report, trained_on=["imagenet-1k"])[0]["additional_data"] is True
    assert robustbench_entry(report, trained_on=["imagenet-1k"], additional=False)[0]["additional_data"] is False


def test_a_nan_accuracy_is_refused_not_written_as_nan():
    report = hostile_report().to_dict()
    report["clean_accuracy"] = float("nan")
    with pytest.raises(UserError, match="clean_accuracy is nan"):
        robustbench_entry(report)
