"""Suites: our `standard` against the reference AutoAttack package (skipped without the extra)."""

from __future__ import annotations

import pytest

import hardenctl
from hardenctl.evaluation import EvalConfig, evaluate


def test_standard_suite_is_at_least_as_strong_as_reference_autoattack(digits_model_path):
    pytest.importorskip("pyautoattack")
    model = hardenctl.load_model(digits_model_path)
    data = hardenctl.load_data("digits-test", model, n=48)
    ours = evaluate(model, data, EvalConfig(eps=0.12, suite="standard", large_eps_samples=0))
    reference = evaluate(model, data, EvalConfig(eps=0.12, suite="autoattack", large_eps_samples=0))
    assert list(reference.attacks) == ["autoattack"]
    assert reference.clean_accuracy == ours.clean_accuracy
    assert ours.robust_accuracy <= reference.robust_accuracy
    assert ours.robust_accuracy < ours.clean_accuracy  # the comparison is not vacuous
