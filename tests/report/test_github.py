"""GitHub Actions workflow commands and the step summary, as the runner parses them."""
from __future__ import annotations

from hardenctl.report import Check, Gate
from hardenctl.report.github import append_step_summary, command, gate_annotations, in_github_actions


def test_a_failed_gate_is_an_error_naming_the_gate_value_and_threshold():
    gates = [Gate("min_robust_acc", 0.45, 0.41, False, "point"), Gate("min_clean_acc", 0.5, 0.9, True, "point"),
             Gate("sanity_checks", 0.0, 0.0, False)]
    lines = gate_annotations(gates, [])
    assert lines == ["::error title=hardenctl gate failed%3A min_robust_acc::min_robust_acc (point): 0.4100 vs threshold 0.4500"]


def test_a_failed_check_is_an_error_unless_accepted_then_a_warning():
    checks = [Check("square_not_stronger_than_whitebox", False, "Square lowered accuracy by 5 points"),
              Check("perturbations_in_bounds", True, "fine"), Check("input_gradients_nonzero", False, "flat margins")]
    lines = gate_annotations([], checks, accepted_checks=["input_gradients_nonzero"])
    assert lines[0].startswith("::error title=hardenctl sanity check failed%3A square_not_stronger_than_whitebox::")
    assert lines[1].startswith("::warning title=hardenctl sanity check failed%3A input_gradients_nonzero::")
    assert len(lines) == 2


def test_data_that_would_end_or_forge_a_command_is_encoded():
    line = command("error", "a: b, c", "50% of\nclass x::warning::forged")
    assert "\n" not in line  # a newline would end the command and start a forged one on the next line
    assert line == "::error title=a%3A b%2C c::50%25 of%0Aclass x::warning::forged"


def test_the_summary_is_appended_not_replaced(tmp_path):
    summary = tmp_path / "summary.md"
    summary.write_text("# earlier step\n")
    environ = {"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary)}
    assert in_github_actions(environ) and not in_github_actions({})
    append_step_summary("| a | b |\n", environ)
    assert summary.read_text() == "# earlier step\n| a | b |\n\n"
    assert append_step_summary("x", {"GITHUB_ACTIONS": "true"}) is None
