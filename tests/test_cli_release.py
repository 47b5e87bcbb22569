"""What a release pipeline reads: `compare`, `card`, the RobustBench entry and GitHub Actions' annotations and
summary."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hardenctl.models import load_model, save_model

EVAL = ["--data", "digits-test", "--n", "60", "--suite", "quick", "--eps", "0.1", "--quiet"]


def run(*args) -> tuple[int, str, str]:
    """The CLI in-process (exit code only; output is not captured here)."""
    from hardenctl.cli import main

    return main([str(a) for a in args]), "", ""


@pytest.fixture(scope="module")
def two_reports(digits_model_path, tmp_path_factory) -> dict[str, Path]:
    """The digits model (old) and a copy with noisy weights (new), each evaluated with its per-sample results; the new
    one also through the paired gate against the old (`eval --baseline`)."""
    folder = tmp_path_factory.mktemp("release")
    model = load_model(digits_model_path)
    torch.manual_seed(3)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.15 * parameter.std() * torch.randn_like(parameter))
    noisy = save_model(model, folder / "noisy.safetensors")
    old, new = folder / "old.json", folder / "new.json"
    assert run("eval", digits_model_path, *EVAL, "--report", old, "--samples", folder / "old.samples.jsonl") == (
        0,
        "",
        "",
    )
    code, _, _ = run(
        "eval",
        noisy,
        *EVAL,
        "--report",
        new,
        "--samples",
        folder / "new.samples.jsonl",
        "--baseline",
        old,
        "--max-drop",
        "1",
    )
    assert code == 0
    return {"old": old, "new": new, "folder": folder, "noisy": noisy}


def test_compare_gives_the_paired_gate_s_mcnemar_p_value(two_reports, cli):
    out = two_reports["folder"] / "cmp"
    code, _, err = cli(
        "compare",
        two_reports["old"],
        two_reports["new"],
        "--report",
        f"{out}.json",
        "--markdown",
        f"{out}.md",
        "--html",
        f"{out}.html",
        "--quiet",
    )
    assert code == 0, err
    gated = json.loads(two_reports["new"].read_text())["extra"]["paired"]["robust"]
    compared = json.loads(Path(f"{out}.json").read_text())["paired"]["robust"]
    assert compared["mcnemar_p"] == gated["mcnemar_p"] and gated["regressed"] + gated["improved"] > 0
    assert (compared["regressed"], compared["improved"]) == (gated["regressed"], gated["improved"])
    markdown = Path(f"{out}.md").read_text()
    assert (
        "| metric | " in markdown and "Paired comparison with the baseline" in markdown and "## Per class" in markdown
    )


def test_compare_gates_on_max_drop_like_eval(two_reports, cli):
    old, new = (json.loads(two_reports[k].read_text()) for k in ("old", "new"))
    fall = old["robust_accuracy"] - new["robust_accuracy"]
    assert fall > 0, "the noisy copy must be less robust for this test"
    code, _, err = cli("compare", two_reports["old"], two_reports["new"], "--max-drop", "0", "--quiet")
    assert code == 1 and "gate failed: max_drop_robust_accuracy" in err and "(paired, per sample)" in err
    code, _, _ = cli("compare", two_reports["old"], two_reports["new"], "--max-drop", f"{fall + 0.01:.4f}", "--quiet")
    assert code == 0


def test_compare_without_samples_compares_rates_and_says_so(two_reports, cli, tmp_path):
    lone = tmp_path / "lone.json"
    lone.write_text(
        two_reports["new"].read_text().replace('"samples_file": "new.samples.jsonl"', '"samples_file": null')
    )
    code, _, err = cli("compare", two_reports["old"], lone, "--max-drop", "1", "--report", tmp_path / "c.json")
    assert code == 0 and "no per-sample results for" in err and "rates compared" in err
    result = json.loads((tmp_path / "c.json").read_text())
    assert result["paired"] is None and {g["basis"] for g in result["gates"]} == {"rates"}


@pytest.mark.parametrize(
    "content, says",
    [(None, "does not exist"), ("not json", "is not a JSON report"), ('{"a": 1}', "is not a hardenctl report")],
)
def test_bad_reports_are_one_line_exit_2_and_write_nothing(two_reports, cli, tmp_path, content, says):
    bad = tmp_path / "bad.json"
    if content is not None:
        bad.write_text(content)
    for args in (
        ("compare", two_reports["old"], bad, "--markdown", tmp_path / "c.md"),
        ("card", bad, "--out", tmp_path / "card"),
    ):
        code, _, err = cli(*args)
        assert code == 2 and says in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == (["bad.json"] if content is not None else [])


def test_compare_refuses_reports_of_different_evaluations(two_reports, cli, tmp_path):
    other = json.loads(two_reports["new"].read_text())
    other["eps"] = 0.2
    (tmp_path / "other.json").write_text(json.dumps(other))
    code, _, err = cli("compare", two_reports["old"], tmp_path / "other.json")
    assert code == 2 and "ε" in err


def test_card_and_robustbench_entry_from_an_eval_report(two_reports, cli, tmp_path):
    from huggingface_hub import ModelCard

    code, _, err = cli(
        "card",
        two_reports["old"],
        "--out",
        tmp_path / "folder",
        "--repo-id",
        "org/digits-robust",
        "--dataset",
        "digits",
        "--robustbench-json",
        tmp_path / "rb.json",
    )
    assert code == 0, err
    report = json.loads(two_reports["old"].read_text())
    card = ModelCard.load(tmp_path / "folder" / "README.md")
    assert card.data.library_name == "timm" and card.data.datasets == ["digits"]
    robust = next(r for r in card.data.eval_results if r.metric_name.startswith("robust"))
    assert robust.metric_value == report["robust_accuracy"]
    assert "timm.create_model('hf-hub:org/digits-robust', pretrained=True)" in card.text
    entry = json.loads((tmp_path / "rb.json").read_text())
    assert (
        entry["autoattack_acc"] == f"{100 * report['robust_accuracy']:.2f}"
        and entry["clean_acc"] == f"{100 * report['clean_accuracy']:.2f}"
    )
    assert (
        entry["eps"] == "0.1" and entry["additional_data"] is False and entry["architecture"] == report["model"]["arch"]
    )
    assert "quick suite" in entry["footnote"] and "first 60 images" in entry["footnote"]
    assert entry["hardenctl"]["n"] == 60 and entry["hardenctl"]["data_sha256"] == report["data_sha256"]


def test_under_github_actions_a_failed_gate_is_an_error_annotation_and_the_summary_is_written(
    two_reports, cli, tmp_path, monkeypatch
):
    summary = tmp_path / "summary.md"
    summary.write_text("## earlier step\n")
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    code, out, err = cli(
        "eval",
        two_reports["noisy"],
        *EVAL,
        "--min-robust-acc",
        "0.99",
        "--report",
        tmp_path / "r.json",
        "--robustbench-json",
        tmp_path / "rb.json",
    )
    assert code == 1 and "gate failed: min_robust_acc" in err
    errors = [line for line in out.splitlines() if line.startswith("::error ")]
    assert errors == [next(line for line in errors if "min_robust_acc" in line)]
    assert (
        "title=hardenctl gate failed%3A min_robust_acc::gate failed: min_robust_acc" in errors[0]
        and "< 0.9900" in errors[0]
    )
    text = summary.read_text()
    assert (
        text.startswith("## earlier step\n")
        and "# hardenctl robustness report" in text
        and "robust (worst case)" in text
    )
    assert json.loads((tmp_path / "rb.json").read_text())["autoattack_acc"]
    monkeypatch.delenv("GITHUB_ACTIONS")
    code, out, _ = cli("eval", two_reports["noisy"], *EVAL, "--min-robust-acc", "0.99")
    assert code == 1 and "::error" not in out  # only under GitHub Actions


def test_compare_refuses_a_harden_report_naming_it(two_reports, cli, tmp_path):
    harden = {
        "input": json.loads(two_reports["old"].read_text()),
        "hardened": json.loads(two_reports["new"].read_text()),
    }
    (tmp_path / "report.json").write_text(json.dumps(harden))
    code, _, err = cli("compare", two_reports["old"], tmp_path / "report.json", "--markdown", tmp_path / "c.md")
    assert code == 2 and "is a harden report" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "c.md").exists()


# ---------------------------------------------------------------------------------------------
# the model card's provenance, data naming and safety; the RobustBench entry's fields (real runs)
# ---------------------------------------------------------------------------------------------
HUB_CARD = "---\nlicense: Apache-2.0\ndatasets:\n- imagenet-1k\n- uoft-cs/cifar10\n---\n# digits-base\n"
QUICK_HARDEN = [
    "--recipe",
    "pgd-at",
    "--data",
    "digits-train",
    "--eval-data",
    "digits-test",
    "--epochs",
    "1",
    "--batch-size",
    "128",
    "--set",
    "attack_steps=2",
    "--set",
    "eps=0.1",
    "--set",
    "monitor_n=32",
    "--eval-n",
    "40",
    "--suite",
    "quick",
    "--eps",
    "0.1",
    "--device",
    "cpu",
    "--quiet",
]


def hub_cache(root: Path, model_path: Path) -> Path:
    """huggingface_hub's cache holding hf-hub:org/digits-base: the digits model as a timm folder with a card."""
    from hardenctl.models import write_config_json

    snapshot = root / "models--org--digits-base" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (root / "models--org--digits-base" / "refs").mkdir()
    (root / "models--org--digits-base" / "refs" / "main").write_text("0" * 40)
    model = load_model(model_path)
    save_model(model, snapshot / "model.safetensors")
    write_config_json(model, snapshot)
    (snapshot / "README.md").write_text(HUB_CARD)
    return root


@pytest.fixture(scope="module")
def hub_runs(digits_model_path, tmp_path_factory) -> dict[str, Path]:
    """`eval` and `harden` of hf-hub:org/digits-base (offline, from the cache), and evals of .npz files whose names say
    cifar10 and imagenette2 (an absolute path each)."""
    folder = tmp_path_factory.mktemp("hub_runs")
    cache = hub_cache(folder / "cache", digits_model_path)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_CACHE", str(cache))
        patch.setenv("HF_HUB_OFFLINE", "1")
        assert run("eval", "hf-hub:org/digits-base", *EVAL, "--report", folder / "eval.json")[0] == 0
        assert run("harden", "hf-hub:org/digits-base", *QUICK_HARDEN, "--out", folder / "hardened")[0] == 0
    from hardenctl.data import load_dataset

    data = load_dataset("digits-test")
    for name in ("cifar10_test", "imagenette2"):
        np.savez(folder / f"{name}.npz", x=data.x.permute(0, 2, 3, 1).numpy(), y=data.y.numpy())
        assert (
            run(
                "eval",
                digits_model_path,
                *EVAL[2:],
                "--data",
                folder / f"{name}.npz",
                "--report",
                folder / f"{name}.json",
            )[0]
            == 0
        )
    return {"cache": cache, "eval": folder / "eval.json", "hardened": folder / "hardened", "folder": folder}


def read_card(path: Path):
    from huggingface_hub import ModelCard
    from huggingface_hub.repocard_data import model_index_to_eval_results

    card = ModelCard.load(path)
    name, results = model_index_to_eval_results(card.data.to_dict()["model-index"])
    return card, name, results


def test_an_eval_card_inherits_the_license_names_its_data_and_is_named_for_its_model(
    hub_runs, cli, tmp_path, monkeypatch
):
    monkeypatch.setenv("HF_HUB_CACHE", str(hub_runs["cache"]))
    code, _, err = cli(
        "card",
        hub_runs["eval"],
        "--out",
        tmp_path / "card",
        "--dataset",
        "uoft-cs/cifar10",
        "--dataset-name",
        "CIFAR-10 test",
        "--robustbench-json",
        tmp_path / "rb.json",
    )
    assert code == 0, err
    assert "license: apache-2.0, as hf-hub:org/digits-base's README.md declares" in err
    card, name, results = read_card(tmp_path / "card" / "README.md")
    report = json.loads(hub_runs["eval"].read_text())
    assert (card.data.license, card.data.base_model, card.data.datasets) == ("apache-2.0", None, ["uoft-cs/cifar10"])
    assert name == "digits-base"  # the model evaluated, not "-hardened"
    assert {(r.dataset_type, r.dataset_name, r.dataset_split) for r in results} == {
        ("uoft-cs/cifar10", "CIFAR-10 test", "test")
    }
    assert [r.metric_value for r in results] == [report["clean_accuracy"], report["robust_accuracy"]]
    entry = json.loads((tmp_path / "rb.json").read_text())
    assert (entry["dataset"], entry["additional_data"]) == ("cifar10", True)  # its card lists imagenet-1k too
    assert "model_info/cifar10/Linf/<Name>.json" in err and "fill link, name, authors, venue and reported" in err
    code, _, err = cli(
        "card",
        hub_runs["eval"],
        "--out",
        tmp_path / "card",
        "--no-additional-data",
        "--license",
        "MIT",
        "--robustbench-json",
        tmp_path / "rb.json",
    )
    assert code == 0, err
    assert json.loads((tmp_path / "rb.json").read_text())["additional_data"] is False
    assert read_card(tmp_path / "card" / "README.md")[0].data.license == "mit"


def test_a_harden_card_names_its_base_model_and_keeps_its_license(hub_runs, cli, tmp_path, monkeypatch):
    card, name, results = read_card(hub_runs["hardened"] / "README.md")  # written by `harden` itself
    assert (card.data.license, card.data.base_model, card.data.base_model_relation) == (
        "apache-2.0",
        "org/digits-base",
        "finetune",
    )
    assert name == "digits-base-hardened" and {(r.dataset_name, r.dataset_split) for r in results} == {
        ("digits-test", "test")
    }
    assert "Base model: org/digits-base (finetune)" in card.text
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)  # the model is not in the cache now: no license, and a note
    code, _, err = cli(
        "card", hub_runs["hardened"] / "report.json", "--out", tmp_path / "card", "--repo-id", "org/robust"
    )
    assert code == 0, err
    assert "the card has no license" in err and "pass --license" in err
    card, name, _ = read_card(tmp_path / "card" / "README.md")
    assert (card.data.license, card.data.base_model, name) == (None, "org/digits-base", "robust")


@pytest.mark.parametrize("name, key", [("cifar10_test", "cifar10"), ("imagenette2", "")])
def test_data_named_by_file_name_never_path_and_robustbench_dataset_matched_whole(hub_runs, cli, tmp_path, name, key):
    report = hub_runs["folder"] / f"{name}.json"
    code, _, err = cli("card", report, "--out", tmp_path / "card", "--robustbench-json", tmp_path / "rb.json")
    assert code == 0, err
    card, _, results = read_card(tmp_path / "card" / "README.md")
    assert {r.dataset_name for r in results} == {f"{name}.npz"} and str(hub_runs["folder"]) not in str(card)
    assert json.loads((tmp_path / "rb.json").read_text())["dataset"] == key
    assert ("dataset left empty" in err) == (not key)


@pytest.mark.parametrize(
    "args, says",
    [
        (["--repo-id", "org/x'); import os; os.system('id') #"], "--repo-id \"org/x'); import os"),
        (["--repo-id", "org/x\n```"], "is not a Hub id"),
        (["--repo-id", "just-a-name"], "is not ORG/NAME"),
        (["--dataset", "uoft-cs/cifar10 $(id)"], "--dataset 'uoft-cs/cifar10 $(id)' is not a Hub id"),
        (["--license", "MIT; rm -rf"], "is not a license id"),
        (["--dataset-name", " "], "--dataset-name ' ' is not a name"),
        (["--dataset-name", "/home/alice/cifar"], "is not a name"),
        (["--robustbench-dataset", "imagenette"], "is not one of RobustBench's datasets"),
    ],
)
def test_bad_card_flags_are_one_line_exit_2_and_write_nothing(two_reports, cli, tmp_path, args, says):
    code, _, err = cli(
        "card", two_reports["old"], "--out", tmp_path / "card", "--robustbench-json", tmp_path / "rb.json", *args
    )
    assert code == 2 and says in err and len(err.strip().splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "layout, says",
    [
        ("readme-folder", "README.md is a folder"),
        ("under-a-file", "is a file, not a folder"),
        ("rb-folder", "--robustbench-json"),
        ("nan", "robust_accuracy is nan"),
    ],
)
def test_bad_outputs_and_nan_reports_are_refused_before_anything_is_written(two_reports, cli, tmp_path, layout, says):
    report, out, rb = two_reports["old"], tmp_path / "card", tmp_path / "rb.json"
    if layout == "readme-folder":
        (out / "README.md").mkdir(parents=True)
    elif layout == "under-a-file":
        (tmp_path / "file").write_text("x")
        out = tmp_path / "file" / "card"
    elif layout == "rb-folder":
        rb.mkdir()
    else:
        data = json.loads(report.read_text())
        data["robust_accuracy"] = float("nan")
        report = tmp_path / "nan.json"
        report.write_text(json.dumps(data))
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    code, _, err = cli("card", report, "--out", out, "--robustbench-json", rb)
    assert code == 2 and says.lower() in err.lower() and len(err.strip().splitlines()) == 1, (
        err
    )  # the reader may say NaN
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


# -- the release API (hardenctl.api.release) and the commands' imports (issue 30) --------------------------------------
PUBLIC = {"", "api", "errors", "version", "report"}  # hardenctl's root, its API, errors, version and report types


def hardenctl_imports(path: Path) -> set[str]:
    """The hardenctl modules a CLI module imports, in functions too (``""``: hardenctl's root); cli's own modules
    are left out."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 2:
            found.add(node.module or "")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("hardenctl"):
            found.add((node.module or "").removeprefix("hardenctl").removeprefix("."))
    return found


CLI_MODULES = sorted(p.stem for p in (Path(__file__).parents[1] / "hardenctl" / "cli").glob("*.py"))


@pytest.mark.parametrize("module", CLI_MODULES)
def test_every_cli_module_imports_only_the_public_api(module):
    """Issue 30: the CLI is a client of the API like a notebook; what it needs, a notebook can import too."""
    import hardenctl.cli

    imports = hardenctl_imports(Path(hardenctl.cli.__file__).parent / f"{module}.py")
    assert {i for i in imports if i not in PUBLIC and not i.startswith("api.")} == set(), imports


def test_the_release_api_imports_no_torch():
    """`recipes`, `compare` and `card` read files: importing the API they call must not cost torch's seconds."""
    import subprocess
    import sys

    probe = (
        "import sys, hardenctl.api as api; names = [r['name'] for r in api.recipes()]; api.compare, api.write_card; "
        "assert 'trades' in names, names; assert 'torch' not in sys.modules, 'torch imported'"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-500:]


def test_write_comparison_writes_every_file_it_can_and_returns_the_others(tmp_path):
    from hostile_reports import eval_dict

    from hardenctl import api

    old, new = tmp_path / "old.json", tmp_path / "new.json"
    old.write_text(json.dumps(eval_dict(samples_file=None)))
    new.write_text(json.dumps(eval_dict(robust_accuracy=0.4, samples_file=None)))
    result = api.compare(old, new, max_drop=0.01)
    (tmp_path / "file").write_text("x")
    failures = api.write_comparison(result, tmp_path / "file" / "c.md", tmp_path / "c.html", tmp_path / "c.json")
    assert [path for path, _ in failures] == [tmp_path / "file" / "c.md"]
    gates = json.loads((tmp_path / "c.json").read_text())["gates"]
    assert [g["name"] for g in gates if not g["passed"]] == ["max_drop_robust_accuracy"]
    assert "hardenctl comparison" in (tmp_path / "c.html").read_text()
