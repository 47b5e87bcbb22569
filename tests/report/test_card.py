"""The model card parses with huggingface_hub as the Hub reads it, and its numbers are the report's."""

from __future__ import annotations

import json

from huggingface_hub import ModelCard
from report_helpers import hostile_report

from hardenctl.report.card import model_card


def harden_like(eps: float = 4 / 255) -> dict:
    """A harden report.json's shape: the input and the hardened model's eval reports side by side."""
    before, after = hostile_report().to_dict(), hostile_report().to_dict()
    before["counts"] = {**before["counts"], "robust_correct": 6}
    before.update(
        eps=eps,
        robust_accuracy=0.1,
        clean_accuracy=0.95,
        model={"arch": "resnet10t", "num_classes": 6, "input_size": [32, 32]},
    )
    after.update(
        eps=eps,
        robust_accuracy=0.5,
        clean_accuracy=0.9,
        suite="standard",
        model={"arch": "resnet10t", "num_classes": 6, "input_size": [32, 32]},
    )
    return {
        "recipe": "mart",
        "profile": "finetune",
        "recipe_config": {"epochs": 3, "lr": 0.005, "eps": eps, "beta": 6.0},
        "selected_epoch": 2,
        "last_epoch": 3,
        "selected_by": "robust",
        "decisions": ["lr auto → 0.005"],
        "data": {"train": "train | **photos**", "train_n": 90, "holdout_n": 10, "eval": "cifar10-test"},
        "input": before,
        "hardened": after,
    }


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


# ---------------------------------------------------------------------------------------------
# a hostile report: every string lands escaped for where it goes
# ---------------------------------------------------------------------------------------------
HOSTILE_ARCH = "x'); import os; os.system('id') #`<script>a</script>"
HOSTILE_SUITE = "q\n```\n$(id) `id` <script>alert(1)</script>"


def hostile_harden() -> dict:
    report = harden_like()
    for side in ("input", "hardened"):
        report[side]["model"] = {"arch": HOSTILE_ARCH, "num_classes": "<b>6</b>", "input_size": [32, "```"]}
        report[side]["suite"] = HOSTILE_SUITE
    report["recipe"], report["profile"] = "mart\n```\n<script>x</script>", "`$(id)`"
    report["data"] = {
        "train": "/home/alice/```\n<img src=x onerror=alert(1)>/train",
        "train_n": "<i>9</i>",
        "holdout_n": 1,
        "eval": "/home/alice/$(id)\n```/test",
    }
    return report


def fences(tokens) -> list:
    return [t for t in tokens if t.type == "fence"]


def raw_html(tokens) -> list:
    inline = [child for t in tokens for child in (t.children or [])]
    return [t for t in [*tokens, *inline] if t.type in ("html_block", "html_inline")]


def test_a_hostile_report_injects_no_code_no_fence_break_and_no_html():
    import ast
    import shlex

    from markdown_it import MarkdownIt

    card = model_card(hostile_harden(), repo_id="org/x", model_name="a\n```\n<script>n</script>")
    tokens = MarkdownIt("commonmark").enable("table").parse(card.text)
    assert not raw_html(tokens)
    python, bash = fences(tokens)  # exactly two code blocks: nothing closed them early, nothing opened another
    assert (python.info, bash.info) == ("python", "bash")
    tree = ast.parse(python.content)
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call)]
    literal_calls = [c for c in calls if any(isinstance(a, ast.Constant) for a in c.args)]
    assert [(ast.unparse(c.func), c.args[0].value) for c in literal_calls] == [("timm.create_model", "hf-hub:org/x")]
    assert not any(isinstance(n, ast.Name) and n.id == "os" for n in ast.walk(tree))
    assert {alias.name for n in ast.walk(tree) if isinstance(n, ast.Import) for alias in n.names} == {"timm", "torch"}
    assert shlex.split(bash.content) == [
        "hardenctl",
        "eval",
        "hf-hub:org/x",
        "--data",
        "YOUR_TEST_DATA",
        "--eps",
        "4/255",
        "--norm",
        "linf",
        "--suite",
        HOSTILE_SUITE.replace("\n", "\\n"),
        "--n",
        "60",
        "--seed",
        "0",
    ]
    assert "/home/alice" not in card.text  # data sources are named by their last component only
    loaded = ModelCard(str(card))  # the front matter still parses as the Hub reads it
    assert {"mart\\n```\\n<script>x</script>"} <= set(loaded.data.tags)


def test_an_unchecked_repo_id_stays_one_literal_and_one_shell_word():
    """The CLI refuses such an id; the renderer still quotes it (a caller of the Python API may not check)."""
    import ast
    import shlex

    from markdown_it import MarkdownIt

    repo_id = "org/x'); import os; os.system('id') #\n```"
    python, bash = fences(MarkdownIt("commonmark").parse(model_card(harden_like(), repo_id=repo_id).text))
    tree = ast.parse(python.content)
    create = next(c for c in ast.walk(tree) if isinstance(c, ast.Call) and ast.unparse(c.func) == "timm.create_model")
    assert create.args[0].value == f"hf-hub:{repo_id}"
    assert not any(isinstance(n, ast.Name) and n.id == "os" for n in ast.walk(tree))
    assert shlex.split(bash.content)[:3] == ["hardenctl", "eval", f"hf-hub:{repo_id}".replace("\n", "\\n")]


def test_a_nan_accuracy_is_refused_naming_the_field():
    import pytest

    from hardenctl.errors import UserError
    from hardenctl.report.robustbench import robustbench_entry

    report = harden_like()
    report["hardened"]["robust_accuracy"] = float("nan")
    with pytest.raises(UserError, match=r"hardened\.robust_accuracy is nan"):
        model_card(report)
    with pytest.raises(UserError, match=r"hardened\.robust_accuracy is nan"):
        robustbench_entry(report)
    report = harden_like()
    report["input"]["clean_accuracy"] = None  # the input's column is in the card's table too
    with pytest.raises(UserError, match=r"input\.clean_accuracy is None"):
        model_card(report)


def test_the_data_is_named_without_its_path_with_the_split_evaluated():
    report = hostile_report().to_dict()
    report["model"] = {
        "arch": "resnet10t",
        "num_classes": 10,
        "input_size": [32, 32],
        "path": "/home/alice/m.safetensors",
    }
    report["data"] = {"source": "/home/alice/data/cifar-10-batches-py (test)"}
    card = model_card(report)
    result = card.data.eval_results[0]
    assert (result.dataset_name, result.dataset_split, result.dataset_type) == ("cifar-10-batches-py", "test", "custom")
    assert "/home/alice" not in str(card) and "the first 60 images of cifar-10-batches-py" in card.text
    assert card.data.model_name == "resnet10t"  # an eval card is named for the model evaluated, never "-hardened"
    held_out = harden_like()
    held_out["data"]["eval"] = "/home/alice/photos (held-out 10)"
    card = model_card(held_out, dataset_id="org/photos", dataset_name="Photos")
    result = card.data.eval_results[0]
    assert (result.dataset_name, result.dataset_split, result.dataset_type) == ("Photos", "validation", "org/photos")
    assert "held out from the training data" in card.text and "not an independent test set" in card.text
    assert card.data.model_name == "resnet10t-hardened"


def test_license_and_base_model_are_written_as_the_hub_reads_them(tmp_path):
    from huggingface_hub.repocard_data import model_index_to_eval_results

    card = model_card(
        harden_like(), license="apache-2.0", base_model="timm/resnet10t.c3_in1k", base_model_relation="finetune"
    )
    path = tmp_path / "README.md"
    path.write_text(str(card))
    loaded = ModelCard.load(path)
    assert (loaded.data.license, loaded.data.base_model, loaded.data.base_model_relation) == (
        "apache-2.0",
        "timm/resnet10t.c3_in1k",
        "finetune",
    )
    name, results = model_index_to_eval_results(loaded.data.to_dict()["model-index"])
    assert name == "resnet10t-hardened" and [r.dataset_split for r in results] == ["test", "test"]


def test_a_code_fence_outlasts_any_backtick_run_inside_it():
    from markdown_it import MarkdownIt

    from hardenctl.report.card import fenced

    lines = ["```", "````` still code", "<script>x</script>"]
    blocks = fences(MarkdownIt("commonmark").parse("\n".join(fenced("bash", lines)) + "\n\nafter\n"))
    assert [(b.info, b.content) for b in blocks] == [("bash", "\n".join(lines) + "\n")]
