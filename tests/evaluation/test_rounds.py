"""``--sequential`` in the engine: rounds of a seeded random order, stopped once every gate is decided, with the
verdict of the full run; images attacked from their own random streams; resumed and sharded runs stop where one
uninterrupted process does."""

from __future__ import annotations

import json

import pytest
import torch

import hardenctl
from hardenctl.evaluation import EvalConfig, evaluate
from hardenctl.evaluation.rounds import evaluation_order
from hardenctl.gates import GateOptions, sequential_plan
from hardenctl.options import EvalRun

N, BATCH = 240, 24
FGSM = dict(
    n=N, batch_size=BATCH, attacks=["fgsm"], eps=0.1, large_eps_samples=0
)  # no random start: the same per image


@pytest.fixture(scope="module")
def digits(digits_model_path):
    model = hardenctl.load_model(digits_model_path)
    data = hardenctl.load_data("digits-test", model, n=N)
    full = evaluate(model, data, EvalConfig(**FGSM))
    return model, data, full


def sequential_run(model, data, options: GateOptions, **config) -> tuple:
    report = evaluate(model, data, EvalConfig(**{**FGSM, **config}, sequential=sequential_plan(options)))
    return report, hardenctl.gate(report, options)


@pytest.mark.parametrize("distance", [-0.3, 0.3])
def test_a_gate_far_from_the_truth_is_decided_early_with_the_full_runs_verdict(digits, distance):
    model, data, full = digits
    options = GateOptions(min_robust_acc=round(full.robust_accuracy + distance, 3))
    report, gates = sequential_run(model, data, options)
    full_verdict = hardenctl.gate(full, options)[0].passed
    assert report.stopped_early and report.n < N and report.sequential["decided_at"] == report.n
    assert gates[0].basis == "sequential" and gates[0].passed == full_verdict == (distance < 0)
    assert report.sequential["max_n"] == N and report.data_sha256 == full.data_sha256  # the whole --n set
    rows = report.samples.rows()
    assert len(rows) == report.n and [r["index"] for r in rows] == sorted(r["index"] for r in rows)
    chosen = set(evaluation_order(N, 0)[: report.n].tolist())  # the first images of the seeded order
    assert {r["index"] for r in rows} == chosen
    full_rows = full.samples.rows()  # FGSM has no randomness: each image's result is the full run's
    assert all(r["robust"] == full_rows[r["index"]]["robust"] for r in rows)


def test_a_gate_at_the_full_runs_value_runs_to_the_end_and_is_judged_as_without_sequential(digits):
    model, data, full = digits
    options = GateOptions(min_robust_acc=full.robust_accuracy, gate_on="point")
    report, gates = sequential_run(model, data, options)
    assert report.n == N and not report.stopped_early and report.sequential["decided_at"] is None
    assert [(g.name, g.value, g.passed, g.basis) for g in gates] == [
        (g.name, g.value, g.passed, g.basis) for g in hardenctl.gate(full, options)
    ]
    for key in ("clean_accuracy", "robust_accuracy", "counts", "per_class"):
        assert getattr(report, key) == getattr(full, key), key
    assert [entry["n"] for entry in report.sequential["rounds"]] == list(range(BATCH, N + 1, BATCH))  # a batch a round


def test_several_gates_stop_only_when_all_are_decided(digits):
    model, data, full = digits
    options = GateOptions(
        min_robust_acc=round(full.robust_accuracy - 0.3, 3), min_clean_acc=round(full.clean_accuracy - 0.02, 3)
    )
    report, _ = sequential_run(model, data, options)
    decided = {name: gate["decided_at"] for name, gate in report.sequential["gates"].items()}
    assert report.n == max(decided.values()) and decided["min_robust_acc"] < decided["min_clean_acc"]


def test_an_image_is_attacked_alike_whatever_its_batch(digits):
    """Random starts come from each image's own stream: PGD and APGD give every image the same result in batches of 16
    and of 48 (with the global generator the two runs differ on some images)."""
    model, data, full = digits
    options = GateOptions(
        min_robust_acc=0.2, min_clean_acc=0.999
    )  # clean accuracy under 0.999: decided only near the end
    results = {}
    for batch in (16, 48):
        report, _ = sequential_run(model, data, options, attacks=["pgd", "apgd-ce"], apgd_steps=5, batch_size=batch)
        results[batch] = {row["index"]: (row["robust"], row["adversarial_prediction"]) for row in report.samples.rows()}
    common = set(results[16]) & set(results[48])
    assert len(common) >= 48 and all(results[16][i] == results[48][i] for i in common)


class Interrupt(Exception):
    pass


def test_a_killed_sequential_run_resumes_and_stops_at_the_same_round(digits, tmp_path):
    model, data, _ = digits
    options = GateOptions(min_robust_acc=0.05, min_clean_acc=0.9)
    config = EvalConfig(**{**FGSM, "attacks": ["pgd"]}, sequential=sequential_plan(options))
    want = evaluate(model, data, config)

    def kill_after_round_two(stage, done, total, metrics=None):
        if stage.startswith("attacks, round 2") and done >= 2 * BATCH:
            raise Interrupt

    with pytest.raises(Interrupt):
        evaluate(model, data, config, kill_after_round_two, run=EvalRun(resume_dir=tmp_path))
    got = evaluate(model, data, config, run=EvalRun(resume_dir=tmp_path, resume=True))
    strip = lambda report: {k: v for k, v in json.loads(report.to_json()).items() if k not in ("seconds", "work")}  # noqa: E731
    assert strip(got) == strip(want) and got.sequential["rounds"] == want.sequential["rounds"]
    assert got.samples.rows() == want.samples.rows()


def test_a_protected_gate_and_a_randomised_clean_gate_are_decided_too(digits):
    model, data, full = digits
    options = GateOptions(min_protected_robust_acc=0.95)
    report, gates = sequential_run(model, data, options, protected=[3])
    assert gates[0].name == "min_protected_robust_acc" and not gates[0].passed and report.stopped_early


def test_the_report_reads_back_with_its_sequential_section(digits, tmp_path):
    model, data, full = digits
    report, _ = sequential_run(model, data, GateOptions(min_robust_acc=0.95))
    path = tmp_path / "r.json"
    path.write_text(report.to_json())
    again = hardenctl.report.load_report(path)
    assert again.sequential == json.loads(report.to_json())["sequential"] and again.stopped_early
    damaged = json.loads(report.to_json())
    damaged["sequential"]["gates"]["min_robust_acc"]["decision"] = "maybe"
    path.write_text(json.dumps(damaged))
    with pytest.raises(hardenctl.errors.UserError, match="sequential.gates.min_robust_acc.decision"):
        hardenctl.report.load_report(path)


def test_without_sequential_the_report_is_unchanged(digits):
    _, _, full = digits
    assert "sequential" not in json.loads(full.to_json()) and not full.stopped_early


def test_a_seed_gives_one_order_and_another_seed_another():
    assert torch.equal(evaluation_order(100, 0), evaluation_order(100, 0))
    assert not torch.equal(evaluation_order(100, 0), evaluation_order(100, 1))
    assert sorted(evaluation_order(100, 3).tolist()) == list(range(100))
