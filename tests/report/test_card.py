"""The model card parses with huggingface_hub as the Hub reads it, and its numbers are the report's."""
from __future__ import annotations

import json

from huggingface_hub import ModelCard

from hardenctl.report.card import model_card
from report_helpers import hostile_report


def harden_like(eps: float = 4 / 255) -> dict:
    """A harden report.json's shape: the input and the hardened model's eval reports side by side."""
    before, after = hostile_report().to_dict(), hostile_report().to_dict()
    before["counts"] = {**before["counts"], "robust_correct": 6}
    before.update(eps=eps, robust_accuracy=0.1, clean_accuracy=0.95, model={"arch": "resnet10t", "num_classes": 6, "input_size": [32, 32]})
    after.update(eps=eps, robust_accuracy=0.5, clean_accuracy=0.9, suite="standard",
                 model={"arch": "resnet10t", "num_classes": 6, "input_size": [32, 32]})
    return {"recipe": "mart", "profile": "finetune", "recipe_config": {"epochs": 3, "lr": 0.005, "eps": eps, "beta": 6.0},
            "selected_epoch": 2, "last_epoch": 3, "selected_by": "robust", "decisions": ["lr auto → 0.005"],
            "data": {"train": "train | **photos**", "train_n": 90, "holdout_n": 10, "eval": "cifar10-test"},
            "input": before, "hardened": after}


def test_the_card_parses_and_lists_the_reports_accuracies(tmp_path):
    report = harden_like()
    path = tmp_path / "README.md"
    path.write_text(str(model_card(report, dataset_id="uoft-cs/cifar10")))
    card = ModelCard.load(path)
    assert card.data.library_name == "timm"
    assert {"adversarial-robustness", "mart", "timm"} <= set(card.data.tags)
    assert card.data.datasets == ["uoft-cs/cifar10"]
    results = {r.metric_name.split(" (")[0]: r for r in card.data.eval_results}
    assert results["robust accuracy"].metric_value == report["hardened"]["robust_accuracy"]
    assert results["clean accuracy"].metric_value == report["hardened"]["clean_accuracy"]
    args = results["robust accuracy"].metric_args
    assert (args["norm"], args["eps"], args["suite"], args["n"]) == ("linf", 4 / 255, "standard", 60)
    assert args["interval_95"][0] < 0.5 < args["interval_95"][1]
    assert "4/255" in results["robust accuracy"].metric_name


def test_the_body_shows_the_trade_the_recipe_and_how_to_load_and_re_evaluate():
    text = model_card(harden_like(), repo_id="org/r10t-robust").text
    assert "| robust accuracy | 10.00% (6/60;" in text and "50.00% (30/60;" in text  # before and after, with counts
    assert "timm.create_model('hf-hub:org/r10t-robust', pretrained=True)" in text
    assert "hardenctl eval hf-hub:org/r10t-robust" in text and "--eps 4/255" in text
    assert "Recipe `mart`, profile `finetune`" in text and "| `beta` | 6.0 |" in text
    assert "## Limits" in text and "60 images" in text


def test_names_from_the_data_cannot_inject_markup():
    text = model_card(harden_like()).text
    assert "train \\| \\*\\*photos\\*\\*" in text  # escaped, so a table row cannot split and nothing turns bold


def test_a_card_for_an_evaluated_model_has_one_column():
    report = hostile_report().to_dict()
    report["model"] = {"arch": "resnet10t", "num_classes": 6, "input_size": [32, 32]}
    card = model_card(report)
    assert "| metric | value |" in card.text and "How it was hardened" not in card.text
    assert "hardenctl" in card.data.tags and "mart" not in card.data.tags
    assert json.loads(json.dumps(card.data.to_dict()))["library_name"] == "timm"
