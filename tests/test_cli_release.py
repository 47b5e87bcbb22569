"""What a release pipeline reads: `compare`, `card`, the RobustBench entry and GitHub Actions' annotations and summary."""
from __future__ import annotations

import json
from pathlib import Path

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
    assert run("eval", digits_model_path, *EVAL, "--report", old, "--samples", folder / "old.samples.jsonl") == (0, "", "")
    code, _, _ = run("eval", noisy, *EVAL, "--report", new, "--samples", folder / "new.samples.jsonl",
                         "--baseline", old, "--max-drop", "1")
    assert code == 0
    return {"old": old, "new": new, "folder": folder, "noisy": noisy}


def test_compare_gives_the_paired_gate_s_mcnemar_p_value(two_reports, cli):
    out = two_reports["folder"] / "cmp"
    code, _, err = cli("compare", two_reports["old"], two_reports["new"], "--report", f"{out}.json", "--markdown", f"{out}.md",
                       "--html", f"{out}.html", "--quiet")
    assert code == 0, err
    gated = json.loads(two_reports["new"].read_text())["extra"]["paired"]["robust"]
    compared = json.loads(Path(f"{out}.json").read_text())["paired"]["robust"]
    assert compared["mcnemar_p"] == gated["mcnemar_p"] and gated["regressed"] + gated["improved"] > 0
    assert (compared["regressed"], compared["improved"]) == (gated["regressed"], gated["improved"])
    markdown = Path(f"{out}.md").read_text()
    assert "| metric | " in markdown and "Paired comparison with the baseline" in markdown and "## Per class" in markdown


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
    lone.write_text(two_reports["new"].read_text().replace('"samples_file": "new.samples.jsonl"', '"samples_file": null'))
    code, _, err = cli("compare", two_reports["old"], lone, "--max-drop", "1", "--report", tmp_path / "c.json")
    assert code == 0 and "no per-sample results for" in err and "rates compared" in err
    result = json.loads((tmp_path / "c.json").read_text())
    assert result["paired"] is None and {g["basis"] for g in result["gates"]} == {"rates"}


@pytest.mark.parametrize("content, says", [(None, "does not exist"), ("not json", "is not a JSON report"),
                                           ('{"a": 1}', "is not a hardenctl report")])
def test_bad_reports_are_one_line_exit_2_and_write_nothing(two_reports, cli, tmp_path, content, says):
    bad = tmp_path / "bad.json"
    if content is not None:
        bad.write_text(content)
    for args in (("compare", two_reports["old"], bad, "--markdown", tmp_path / "c.md"), ("card", bad, "--out", tmp_path / "card")):
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

    code, _, err = cli("card", two_reports["old"], "--out", tmp_path / "folder", "--repo-id", "org/digits-robust",
                       "--dataset", "digits", "--robustbench-json", tmp_path / "rb.json")
    assert code == 0, err
    report = json.loads(two_reports["old"].read_text())
    card = ModelCard.load(tmp_path / "folder" / "README.md")
    assert card.data.library_name == "timm" and card.data.datasets == ["digits"]
    robust = next(r for r in card.data.eval_results if r.metric_name.startswith("robust"))
    assert robust.metric_value == report["robust_accuracy"]
    assert "timm.create_model('hf-hub:org/digits-robust', pretrained=True)" in card.text
    entry = json.loads((tmp_path / "rb.json").read_text())
    assert entry["autoattack_acc"] == f"{100 * report['robust_accuracy']:.2f}" and entry["clean_acc"] == f"{100 * report['clean_accuracy']:.2f}"
    assert entry["eps"] == "0.1" and entry["additional_data"] is False and entry["architecture"] == report["model"]["arch"]
    assert "quick suite" in entry["footnote"] and "first 60 images" in entry["footnote"]
    assert entry["hardenctl"]["n"] == 60 and entry["hardenctl"]["data_sha256"] == report["data_sha256"]


def test_under_github_actions_a_failed_gate_is_an_error_annotation_and_the_summary_is_written(two_reports, cli, tmp_path, monkeypatch):
    summary = tmp_path / "summary.md"
    summary.write_text("## earlier step\n")
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    code, out, err = cli("eval", two_reports["noisy"], *EVAL, "--min-robust-acc", "0.99", "--report", tmp_path / "r.json",
                         "--robustbench-json", tmp_path / "rb.json")
    assert code == 1 and "gate failed: min_robust_acc" in err
    errors = [line for line in out.splitlines() if line.startswith("::error ")]
    assert errors == [next(line for line in errors if "min_robust_acc" in line)]
    assert "title=hardenctl gate failed%3A min_robust_acc::gate failed: min_robust_acc" in errors[0] and "< 0.9900" in errors[0]
    text = summary.read_text()
    assert text.startswith("## earlier step\n") and "# hardenctl robustness report" in text and "robust (worst case)" in text
    assert json.loads((tmp_path / "rb.json").read_text())["autoattack_acc"]
    monkeypatch.delenv("GITHUB_ACTIONS")
    code, out, _ = cli("eval", two_reports["noisy"], *EVAL, "--min-robust-acc", "0.99")
    assert code == 1 and "::error" not in out  # only under GitHub Actions


def test_compare_refuses_a_harden_report_naming_it(two_reports, cli, tmp_path):
    harden = {"input": json.loads(two_reports["old"].read_text()), "hardened": json.loads(two_reports["new"].read_text())}
    (tmp_path / "report.json").write_text(json.dumps(harden))
    code, _, err = cli("compare", two_reports["old"], tmp_path / "report.json", "--markdown", tmp_path / "c.md")
    assert code == 2 and "is a harden report" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "c.md").exists()
