"""`hardenctl eval` from the command line: outputs, gates, exit codes."""

from __future__ import annotations

import argparse
import json
import xml.etree.ElementTree as ET

import pytest
import torch
from testing_helpers import read_checkpoint, read_json, timeless

FAST = ("--suite", "quick", "--apgd-steps", "10", "--n", "48", "--batch-size", "32", "--quiet")
REPORT_KEYS = {
    "schema_version",
    "clean_accuracy",
    "robust_accuracy",
    "attacks",
    "per_class",
    "n",
    "eps",
    "norm",
    "suite",
    "seed",
    "model_sha256",
    "data_sha256",
    "versions",
    "normalization",
    "seconds",
    "checks",
    "gates",
}


def test_eval_writes_a_complete_report(cli, digits_model_path, tmp_path):
    code, out, err = cli(
        "eval",
        digits_model_path,
        "--data",
        "digits-test",
        *FAST,
        "--report",
        tmp_path / "r.json",
        "--markdown",
        tmp_path / "r.md",
        "--junit",
        tmp_path / "r.xml",
    )
    assert code == 0, err
    report = read_json(tmp_path / "r.json")
    assert REPORT_KEYS <= set(report)
    assert list(report["attacks"]) == ["pgd", "apgd-ce"]
    assert report["clean_accuracy"] > 0.8
    assert report["robust_accuracy"] < report["clean_accuracy"] - 0.1  # 8/255 is a real attack even on 8x8 digits
    assert report["n"] == 48 and report["suite"] == "quick" and abs(report["eps"] - 8 / 255) < 1e-12
    assert report["normalization"]["source"] == "checkpoint"
    assert set(report["versions"]) >= {"torch", "timm", "hardenctl"}
    assert {c["name"] for c in report["checks"]} >= {
        "perturbations_in_bounds",
        "input_gradients_nonzero",
        "eot_used_for_randomized_model",
        "near_zero_accuracy_at_large_eps",
        "eval_mode_and_buffers_unchanged",
    }
    assert all(set(c) == {"name", "passed", "detail", "value", "limit"} for c in report["checks"])
    assert all(c["passed"] for c in report["checks"]), report["checks"]  # an honest model raises no alarm
    assert {g["name"]: g["passed"] for g in report["gates"]} == {"sanity_checks": True}
    assert sum(v["n"] for v in report["per_class"].values()) == 48
    assert "robust (worst case)" in (tmp_path / "r.md").read_text()
    suite = ET.parse(tmp_path / "r.xml").getroot()
    assert suite.tag == "testsuite" and int(suite.get("tests")) == len(report["checks"]) + len(report["gates"])


def test_json_on_stdout_is_the_report(cli, digits_model_path):
    code, out, _ = cli("eval", digits_model_path, "--data", "digits-test", *FAST, "--json")
    assert code == 0
    assert json.loads(out)["n"] == 48


def test_seed_makes_the_report_repeat_exactly(cli, digits_model_path, tmp_path):
    for name in ("a", "b"):
        assert (
            cli(
                "eval",
                digits_model_path,
                "--data",
                "digits-test",
                "--attacks",
                "pgd,square",
                "--square-queries",
                "50",
                "--n",
                "40",
                "--quiet",
                "--seed",
                "3",
                "--report",
                tmp_path / f"{name}.json",
            )[0]
            == 0
        )
    first, second = timeless(read_json(tmp_path / "a.json")), timeless(read_json(tmp_path / "b.json"))
    assert first == second and first["work"]["pgd"]["forward_passes"] > 0


def test_batch_size_auto_and_bf16_search_are_recorded_in_every_report(cli, digits_model_path, tmp_path):
    code, out, err = cli(
        "eval",
        digits_model_path,
        "--data",
        "digits-test",
        "--attacks",
        "apgd-ce",
        "--apgd-steps",
        "5",
        "--n",
        "24",
        "--batch-size",
        "auto",
        "--eval-precision",
        "bf16",
        "--quiet",
        "--json",
        "--markdown",
        tmp_path / "r.md",
    )
    assert code == 0, err
    execution = json.loads(out)["execution"]
    assert execution["batch_size"] == 24 and execution["batch_size_auto"]["chosen"] == 24
    assert (execution["search_precision"], execution["verdict_precision"], execution["precision_requested"]) == (
        "bf16",
        "fp32",
        "bf16",
    )
    assert (
        "batch 24 (auto), attacks searched in bf16 autocast, every verdict re-scored in fp32"
        in (tmp_path / "r.md").read_text()
    )


def test_gates_exit_1_and_name_the_gate(cli, digits_model_path, tmp_path):
    code, _, err = cli(
        "eval",
        digits_model_path,
        "--data",
        "digits-test",
        *FAST,
        "--min-clean-acc",
        "0.5",
        "--min-robust-acc",
        "1.0",
        "--report",
        tmp_path / "r.json",
    )
    assert code == 1
    assert "gate failed: min_robust_acc" in err and "min_clean_acc" not in err
    gates = {g["name"]: g for g in read_json(tmp_path / "r.json")["gates"]}
    assert gates["min_clean_acc"]["passed"] and not gates["min_robust_acc"]["passed"]
    code, _, _ = cli(
        "eval", digits_model_path, "--data", "digits-test", *FAST, "--min-clean-acc", "0.5", "--min-robust-acc", "0.0"
    )
    assert code == 0


def test_baseline_max_drop_gate(cli, digits_model_path, tmp_path):
    baseline = read_json_after(cli, digits_model_path, tmp_path / "base.json")
    baseline["robust_accuracy"] = min(1.0, baseline["robust_accuracy"] + 0.2)
    (tmp_path / "better.json").write_text(json.dumps(baseline))
    code, _, err = cli(
        "eval",
        digits_model_path,
        "--data",
        "digits-test",
        *FAST,
        "--baseline",
        tmp_path / "better.json",
        "--max-drop",
        "0.05",
    )
    assert code == 1 and "max_drop_robust_accuracy" in err
    code, _, _ = cli(
        "eval",
        digits_model_path,
        "--data",
        "digits-test",
        *FAST,
        "--baseline",
        tmp_path / "base.json",
        "--max-drop",
        "0.0",
    )
    assert code == 0


def read_json_after(cli, model, path):
    assert cli("eval", model, "--data", "digits-test", *FAST, "--report", path)[0] == 0
    return read_json(path)


def test_eps_sweep_adds_curve_and_plot(cli, digits_model_path, tmp_path):
    code, _, err = cli(
        "eval",
        digits_model_path,
        "--data",
        "digits-test",
        "--attacks",
        "pgd",
        "--n",
        "32",
        "--quiet",
        "--eps-sweep",
        "0,0.05,0.2",
        "--report",
        tmp_path / "r.json",
        "--markdown",
        tmp_path / "r.md",
    )
    assert code == 0, err
    report = read_json(tmp_path / "r.json")
    sweep = [s["robust_accuracy"] for s in report["eps_sweep"]]
    assert [s["eps"] for s in report["eps_sweep"]] == sorted(s["eps"] for s in report["eps_sweep"])
    assert sweep[0] >= sweep[-1] and sweep[-1] < sweep[0]
    assert any(c["name"] == "robust_accuracy_non_increasing_in_eps" for c in report["checks"])
    pytest.importorskip("matplotlib")
    assert (tmp_path / "r.eps_sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert "r.eps_sweep.png" in (tmp_path / "r.md").read_text()


def test_timm_train_checkpoint_with_args_namespace_loads(cli, digits_model_path, tmp_path):
    state, _ = read_checkpoint(digits_model_path)
    path = tmp_path / "checkpoint-3.pth.tar"
    torch.save({"epoch": 3, "arch": "test_resnet", "state_dict": state, "args": argparse.Namespace(lr=0.1)}, path)
    code, out, err = cli("eval", path, "--data", "digits-test", *FAST, "--json", "--mean", "0.3", "--std", "0.4")
    assert code == 0, err
    report = json.loads(out)
    assert report["normalization"]["source"] == "cli"
    assert report["model"]["input_size_source"] == "data"


def test_bare_state_dict_needs_arch_and_uses_timm_normalisation(cli, digits_model_path, tmp_path):
    state, _ = read_checkpoint(digits_model_path)
    path = tmp_path / "weights.pt"
    torch.save({f"module.{k}": v for k, v in state.items()}, path)  # DDP-prefixed keys too
    code, _, err = cli("eval", path, "--data", "digits-test", *FAST)
    assert code == 2 and "--arch" in err
    code, out, err = cli("eval", path, "--data", "digits-test", *FAST, "--arch", "test_resnet", "--json")
    assert code == 0, err
    assert json.loads(out)["normalization"]["source"].startswith("timm pretrained_cfg")


def test_resize_makes_a_size_mismatch_work(cli, digits_model_path, tmp_path):
    import numpy as np

    from hardenctl.data import load_dataset

    data = load_dataset("digits-test").resized((16, 20))  # not square: centre crop and squash differ
    np.savez(tmp_path / "big.npz", x=data.x.permute(0, 2, 3, 1).numpy(), y=data.y.numpy())
    code, out, err = cli("eval", digits_model_path, "--data", tmp_path / "big.npz", *FAST, "--json")
    assert code == 0, err  # prepared as timm would: short side to 8 / crop_pct, centre crop to the model's 8x8
    report = json.loads(out)
    assert report["data"]["image_size"] == [8, 8] and any("16x20" in note for note in report["data"]["notes"]), report[
        "data"
    ]
    cropped = report["data_sha256"]
    code, out, err = cli("eval", digits_model_path, "--data", tmp_path / "big.npz", *FAST, "--resize", "--json")
    assert code == 0, err
    squashed = json.loads(out)
    assert squashed["data"]["image_size"] == [8, 8] and squashed["data_sha256"] != cropped
    assert (
        squashed["model"]["data_config"]["crop_mode"] == "squash"
        and squashed["model"]["data_config"]["crop_pct"] == 1.0
    )


# -- intervals, --gate-on, --samples and paired baselines (issue 14) --------------------------------------------------
QUICK = ("--attacks", "fgsm", "--n", "48", "--batch-size", "48")


def test_intervals_in_the_json_markdown_and_console_table(cli, digits_model_path, tmp_path):
    from hardenctl.stats import wilson_interval

    code, out, err = cli(
        "eval",
        digits_model_path,
        "--data",
        "digits-test",
        *QUICK,
        "--report",
        tmp_path / "r.json",
        "--markdown",
        tmp_path / "r.md",
    )
    assert code == 0, err
    report = read_json(tmp_path / "r.json")
    assert report["interval_method"] == "wilson" and report["gate_on"] == "point"
    low, high = report["intervals"]["robust_accuracy"]
    assert (low, high) == pytest.approx(wilson_interval(report["robust_accuracy"], 48))
    assert low < report["robust_accuracy"] < high or report["robust_accuracy"] in (0.0, 1.0)
    assert list(report["intervals"]["attacks"]) == ["fgsm"]
    assert all(len(v["clean_interval"]) == 2 and len(v["robust_interval"]) == 2 for v in report["per_class"].values())
    markdown = (tmp_path / "r.md").read_text()
    assert f"**{report['robust_accuracy']:.2%}** ({100 * low:.1f}–{100 * high:.1f})" in markdown
    assert "95% interval" in out and f"{100 * low:.1f}–{100 * high:.1f}%" in out


def test_gate_on_lower_fails_where_the_point_estimate_passes(cli, digits_model_path, tmp_path):
    args = ("eval", digits_model_path, "--data", "digits-test", *QUICK, "--quiet")
    assert cli(*args, "--report", tmp_path / "r.json")[0] == 0
    robust = read_json(tmp_path / "r.json")["robust_accuracy"]
    assert 0 < robust
    threshold = f"{robust:.6f}"[:-1]  # just at (below) the point estimate
    code, _, err = cli(*args, "--min-robust-acc", threshold, "--report", tmp_path / "point.json")
    assert code == 0, err
    code, _, err = cli(*args, "--min-robust-acc", threshold, "--gate-on", "lower", "--report", tmp_path / "lower.json")
    assert code == 1 and "gate failed: min_robust_acc (95% lower bound)" in err, err
    report = read_json(tmp_path / "lower.json")
    gate = {g["name"]: g for g in report["gates"]}["min_robust_acc"]
    assert report["gate_on"] == "lower" and gate["basis"] == "lower95"
    assert gate["value"] == pytest.approx(report["intervals"]["robust_accuracy"][0])
    assert cli(*args, "--gate-on", "upper")[0] == 2


def edit_samples(path, out, change) -> list[dict]:
    """Copy a samples file to ``out`` with ``change(rows)`` applied (the header kept), return the new rows."""
    header, *rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows = change(rows)
    out.write_text("".join(json.dumps(item) + "\n" for item in [header, *rows]))
    return rows


def test_samples_file_and_paired_baseline_gate(cli, digits_model_path, tmp_path):
    args = ("eval", digits_model_path, "--data", "digits-test", *QUICK, "--quiet")
    samples = tmp_path / "per-sample" / "base.jsonl"  # not the BASE.samples.jsonl convention: found through the report
    code, _, err = cli(*args, "--report", tmp_path / "base.json", "--samples", samples)
    assert code == 0, err
    base = read_json(tmp_path / "base.json")
    header, *rows = [json.loads(line) for line in samples.read_text().splitlines()]
    assert base["samples_file"] == "per-sample/base.jsonl"
    assert header == {
        "format": "hardenctl-samples",
        "version": 1,
        **{k: base[k] for k in ("model_sha256", "data_sha256", "eps", "norm", "suite", "n", "seed")},
    }
    assert [r["index"] for r in rows] == list(range(48)) and sum(r["robust"] for r in rows) == round(
        base["robust_accuracy"] * 48
    )
    assert all(r["broken_by"] == "fgsm" for r in rows if r["clean_correct"] == 1 and not r["robust"])

    # the same model again, the baseline's samples found through the path base.json recorded: nothing changed
    code, _, err = cli(
        *args, "--baseline", tmp_path / "base.json", "--max-drop", "0", "--report", tmp_path / "same.json"
    )
    assert code == 0, err
    same = read_json(tmp_path / "same.json")
    assert same["extra"]["paired"]["robust"] == {
        "regressed": 0,
        "improved": 0,
        "unchanged": 48,
        "difference": 0.0,
        "mcnemar_p": 1.0,
    }
    assert {g["name"]: g["basis"] for g in same["gates"]}["max_drop_robust_accuracy"] == "paired"

    # a baseline in which 3 broken samples were robust and 1 robust sample was broken: 3 regressed, 1 improved
    robust = [r["index"] for r in rows if r["robust"]]
    broken = [r["index"] for r in rows if not r["robust"]]
    assert len(robust) >= 1 and len(broken) >= 3
    flipped = {*broken[:3], robust[0]}
    edit_samples(
        samples,
        tmp_path / "old.jsonl",
        lambda rs: [{**r, "robust": not r["robust"]} if r["index"] in flipped else r for r in rs],
    )
    robust_then = base["counts"]["robust_correct"] + 2  # the report those rows belong to: its counts agree with them
    (tmp_path / "old.json").write_text(
        json.dumps(
            {
                **base,
                "samples_file": None,
                "robust_accuracy": robust_then / 48,
                "counts": {**base["counts"], "robust_correct": robust_then},
            }
        )
    )
    code, _, err = cli(
        *args,
        "--baseline",
        tmp_path / "old.json",
        "--baseline-samples",
        tmp_path / "old.jsonl",
        "--max-drop",
        "0.03",
        "--report",
        tmp_path / "new.json",
        "--markdown",
        tmp_path / "new.md",
    )
    assert code == 1 and "max_drop_robust_accuracy: dropped 0.0417 from the baseline (paired, per sample)" in err, err
    paired = read_json(tmp_path / "new.json")["extra"]["paired"]
    assert (paired["robust"]["regressed"], paired["robust"]["improved"]) == (3, 1)
    assert paired["robust"]["mcnemar_p"] == pytest.approx(2 * (1 + 4) / 16)  # 2·P(X ≤ 1), X ~ Bin(4, 1/2)
    assert paired["baseline_samples"] == str(tmp_path / "old.jsonl")
    assert [r["index"] for r in paired["regressed_samples"]] == broken[:3]
    markdown = (tmp_path / "new.md").read_text()
    assert "**3 regressed**" in markdown and f"| {broken[0]} | row {broken[0]} |" in markdown
    # the rate gate of the same reports passes (the reports' rates are equal): the file was used
    code, _, err = cli(*args, "--baseline", tmp_path / "base.json", "--baseline-samples", samples, "--max-drop", "0.03")
    assert code == 0, err


def test_foreign_or_malformed_baseline_samples_are_refused_in_one_line(cli, digits_model_path, tmp_path):
    args = ("eval", digits_model_path, "--data", "digits-test", *QUICK, "--quiet")
    assert cli(*args, "--report", tmp_path / "base.json", "--samples", tmp_path / "base.samples.jsonl")[0] == 0
    (tmp_path / "garbage.jsonl").write_text("index,label\n0,3\n")
    edit_samples(tmp_path / "base.samples.jsonl", tmp_path / "short.jsonl", lambda rs: rs[:-1])
    edit_samples(
        tmp_path / "base.samples.jsonl", tmp_path / "bad.jsonl", lambda rs: [{**rs[0], "robust": "yes"}, *rs[1:]]
    )
    lines = (tmp_path / "base.samples.jsonl").read_text().splitlines()
    (tmp_path / "other.jsonl").write_text(
        "\n".join([json.dumps({**json.loads(lines[0]), "seed": 9}), *lines[1:]]) + "\n"
    )
    cases = (
        (tmp_path / "base.json", "not a hardenctl per-sample results file"),  # a report, not a samples file
        (tmp_path / "garbage.jsonl", "line 1 is not JSON"),
        (tmp_path / "short.jsonl", "header says n = 48 but it has 47"),
        (tmp_path / "bad.jsonl", "line 2: robust must be true or false"),
        (tmp_path / "other.jsonl", "does not belong to the baseline report"),
        (tmp_path / "absent.jsonl", "not found"),
    )
    for path, message in cases:
        code, _, err = cli(
            *args, "--baseline", tmp_path / "base.json", "--baseline-samples", path, "--report", tmp_path / "new.json"
        )
        assert code == 2 and message in err and err.strip().count("\n") == 0 and err.startswith("error: "), (path, err)
        assert not (tmp_path / "new.json").exists()
    # found by convention (BASE.samples.jsonl) but belonging to another report: refused too, not silently used
    (tmp_path / "base.samples.jsonl").replace(tmp_path / "moved.jsonl")
    base = read_json(tmp_path / "base.json")
    (tmp_path / "base.json").write_text(json.dumps({**base, "samples_file": None}))
    (tmp_path / "other.jsonl").replace(tmp_path / "base.samples.jsonl")
    code, _, err = cli(*args, "--baseline", tmp_path / "base.json")
    assert code == 2 and "its seed is 9" in err, err
    code, _, err = cli(*args, "--baseline-samples", tmp_path / "moved.jsonl")
    assert code == 2 and "--baseline-samples needs --baseline" in err
