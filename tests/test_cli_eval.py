"""`hardenctl eval` from the command line: outputs, gates, exit codes."""
from __future__ import annotations

import argparse
import json
import xml.etree.ElementTree as ET

import pytest
import torch

from testing_helpers import read_json
from hardenctl.models import read_checkpoint

FAST = ("--suite", "quick", "--apgd-steps", "10", "--n", "48", "--batch-size", "32", "--quiet")
REPORT_KEYS = {"schema_version", "clean_accuracy", "robust_accuracy", "attacks", "per_class", "n", "eps", "norm", "suite",
               "seed", "model_sha256", "data_sha256", "versions", "normalization", "seconds", "checks", "gates"}


def test_eval_writes_a_complete_report(cli, digits_model_path, tmp_path):
    code, out, err = cli("eval", digits_model_path, "--data", "digits-test", *FAST, "--report", tmp_path / "r.json",
                         "--markdown", tmp_path / "r.md", "--junit", tmp_path / "r.xml")
    assert code == 0, err
    report = read_json(tmp_path / "r.json")
    assert REPORT_KEYS <= set(report)
    assert list(report["attacks"]) == ["pgd", "apgd-ce"]
    assert report["clean_accuracy"] > 0.8
    assert report["robust_accuracy"] < report["clean_accuracy"] - 0.1  # 8/255 is a real attack even on 8x8 digits
    assert report["n"] == 48 and report["suite"] == "quick" and abs(report["eps"] - 8 / 255) < 1e-12
    assert report["normalization"]["source"] == "checkpoint"
    assert set(report["versions"]) >= {"torch", "timm", "hardenctl"}
    assert {c["name"] for c in report["checks"]} >= {"perturbations_in_bounds", "input_gradients_nonzero", "eot_used_for_randomized_model",
                                                     "near_zero_accuracy_at_large_eps", "eval_mode_and_buffers_unchanged"}
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
        assert cli("eval", digits_model_path, "--data", "digits-test", "--attacks", "pgd,square", "--square-queries", "50",
                   "--n", "40", "--quiet", "--seed", "3", "--report", tmp_path / f"{name}.json")[0] == 0
    first, second = read_json(tmp_path / "a.json"), read_json(tmp_path / "b.json")
    first.pop("seconds"), second.pop("seconds")
    assert first == second


def test_gates_exit_1_and_name_the_gate(cli, digits_model_path, tmp_path):
    code, _, err = cli("eval", digits_model_path, "--data", "digits-test", *FAST, "--min-clean-acc", "0.5",
                       "--min-robust-acc", "1.0", "--report", tmp_path / "r.json")
    assert code == 1
    assert "gate failed: min_robust_acc" in err and "min_clean_acc" not in err
    gates = {g["name"]: g for g in read_json(tmp_path / "r.json")["gates"]}
    assert gates["min_clean_acc"]["passed"] and not gates["min_robust_acc"]["passed"]
    code, _, _ = cli("eval", digits_model_path, "--data", "digits-test", *FAST, "--min-clean-acc", "0.5", "--min-robust-acc", "0.0")
    assert code == 0


def test_baseline_max_drop_gate(cli, digits_model_path, tmp_path):
    baseline = read_json_after(cli, digits_model_path, tmp_path / "base.json")
    baseline["robust_accuracy"] = min(1.0, baseline["robust_accuracy"] + 0.2)
    (tmp_path / "better.json").write_text(json.dumps(baseline))
    code, _, err = cli("eval", digits_model_path, "--data", "digits-test", *FAST, "--baseline", tmp_path / "better.json", "--max-drop", "0.05")
    assert code == 1 and "max_drop_robust_accuracy" in err
    code, _, _ = cli("eval", digits_model_path, "--data", "digits-test", *FAST, "--baseline", tmp_path / "base.json", "--max-drop", "0.0")
    assert code == 0


def read_json_after(cli, model, path):
    assert cli("eval", model, "--data", "digits-test", *FAST, "--report", path)[0] == 0
    return read_json(path)


def test_eps_sweep_adds_curve_and_plot(cli, digits_model_path, tmp_path):
    code, _, err = cli("eval", digits_model_path, "--data", "digits-test", "--attacks", "pgd", "--n", "32", "--quiet",
                       "--eps-sweep", "0,0.05,0.2", "--report", tmp_path / "r.json", "--markdown", tmp_path / "r.md")
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

    data = load_dataset("digits-test").resized((16, 16))
    np.savez(tmp_path / "big.npz", x=data.x.permute(0, 2, 3, 1).numpy(), y=data.y.numpy())
    code, _, err = cli("eval", digits_model_path, "--data", tmp_path / "big.npz", *FAST)
    assert code == 2 and "--resize" in err
    code, out, err = cli("eval", digits_model_path, "--data", tmp_path / "big.npz", *FAST, "--resize", "--json")
    assert code == 0, err
    assert json.loads(out)["data"]["image_size"] == [8, 8]
