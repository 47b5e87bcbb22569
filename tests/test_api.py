"""What the CLI can do, a notebook does through the API: shards, resume, kept images, samples, baselines, gates."""

from __future__ import annotations

import json

import pytest
from testing_helpers import read_adversarial, timeless

import hardenctl
from hardenctl.errors import UserError
from hardenctl.evaluation.resume import state_files
from hardenctl.options import EvalRun

SETTINGS = dict(n=16, batch_size=8, attacks=["fgsm"], eps=0.1, large_eps_samples=0)


def without_seconds(report) -> dict:
    return timeless(json.loads(report.to_json()))


def test_evaluate_gate_and_write_like_the_cli(digits_model_path, tmp_path):
    assert {"gate", "write_outputs", "GateOptions"} <= set(hardenctl.__all__)
    report = hardenctl.evaluate(
        digits_model_path,
        "digits-test",
        run=EvalRun(resume_dir=tmp_path / "state", save_adversarial=tmp_path / "adversarial", pictures=2),
        **SETTINGS,
    )
    assert [p.name for p in state_files(tmp_path / "state")] == ["state-rank0-of1.pt"]
    assert read_adversarial(tmp_path / "adversarial")[0].tolist() == list(range(16))
    assert len(report.pictures.chosen()) == 2
    notes: list[str] = []
    again = hardenctl.evaluate(
        digits_model_path,
        "digits-test",
        run=EvalRun(resume_dir=tmp_path / "state", resume=True, save_adversarial=tmp_path / "adversarial"),
        log=notes.append,
        **SETTINGS,
    )
    assert without_seconds(again) == without_seconds(report) and notes == [
        f"resumed from {tmp_path / 'state'}: 2 batches were finished before"
    ]

    hardenctl.write_outputs(report, json=tmp_path / "base.json", samples=tmp_path / "base.samples.jsonl")
    assert json.loads((tmp_path / "base.json").read_text())["samples_file"] == "base.samples.jsonl"
    gates = hardenctl.gate(
        again, baseline=tmp_path / "base.json", min_robust_acc=0.0
    )  # samples found beside the baseline
    assert {g.name: (g.passed, g.basis) for g in gates}["max_drop_robust_accuracy"] == (True, "paired")
    assert again.extra["paired"]["robust"]["regressed"] == 0 and again.gates == gates
    with pytest.raises(UserError, match="--max-drop needs --baseline"):
        hardenctl.gate(report, max_drop=0.1)
    with pytest.raises(UserError, match="unknown check"):
        hardenctl.GateOptions(allow_check=("no_such_check",))
