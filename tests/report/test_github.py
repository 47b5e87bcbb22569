"""GitHub Actions workflow commands and the step summary, as the runner parses them."""

from __future__ import annotations

import io
from pathlib import Path

from markdown_it import MarkdownIt

from hardenctl.report import Check, Gate
from hardenctl.report.github import (
    append_step_summary,
    command,
    failure_annotation,
    failure_summary,
    gate_annotations,
    in_github_actions,
)

HOSTILE = "bad ```x``` <script>alert(1)</script> $x$ **b**\n::warning::forged 100%"


def test_a_failed_gate_is_an_error_naming_the_gate_value_and_threshold():
    gates = [
        Gate("min_robust_acc", 0.45, 0.41, False, "point"),
        Gate("min_clean_acc", 0.5, 0.9, True, "point"),
        Gate("sanity_checks", 0.0, 0.0, False),
    ]
    lines = gate_annotations(gates, [])
    assert lines == [
        "::error title=hardenctl gate failed%3A min_robust_acc::min_robust_acc (point): 0.4100 vs threshold 0.4500"
    ]


def test_a_failed_check_is_an_error_unless_accepted_then_a_warning():
    checks = [
        Check("square_not_stronger_than_whitebox", False, "Square lowered accuracy by 5 points"),
        Check("perturbations_in_bounds", True, "fine"),
        Check("input_gradients_nonzero", False, "flat margins"),
    ]
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


def test_a_summary_that_cannot_be_written_warns_on_one_line_and_raises_nothing(tmp_path):
    stderr = io.StringIO()
    for target in (tmp_path, tmp_path / "summary.md" / "x"):  # a folder; a path under a file
        (tmp_path / "summary.md").write_text("")
        assert append_step_summary("x", {"GITHUB_STEP_SUMMARY": str(target)}, stderr=stderr) is None
    lines = stderr.getvalue().splitlines()
    assert len(lines) == 2 and all(line.startswith("warning: could not append to the step summary") for line in lines)
    assert "Is a directory" in lines[0] and "Not a directory" in lines[1]


def test_a_failure_annotation_names_the_command_and_exit_code_and_cannot_be_forged():
    line = failure_annotation(2, "hardenctl eval", "error: checkpoint not found: m.pt; check the path")
    assert line == (
        "::error title=hardenctl eval%3A bad input (exit 2)::error: checkpoint not found: m.pt; check the path"
    )
    forged = failure_annotation(3, "hardenctl eval", HOSTILE)
    assert forged.startswith("::error title=hardenctl eval%3A internal error (exit 3)::bad ")
    assert "\n" not in forged and forged.endswith("%0A::warning::forged 100%25")


def test_the_failure_summary_shows_the_message_as_spelled():
    """GitHub renders the step summary as Markdown: the message is data, so it sits in a code block no backtick
    run, tag or newline inside it can end."""
    markdown = failure_summary(3, "hardenctl eval", HOSTILE, Path("/tmp/logs/hardenctl-error-1.log"))
    html = MarkdownIt("commonmark").render(markdown)
    assert html.startswith("<h3>hardenctl eval: internal error (exit 3)</h3>\n")
    shown = HOSTILE.replace("\n", "\\n").replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    assert f'<pre><code class="language-text">{shown}\n</code></pre>' in html  # one line, whole, literal
    assert "<script>" not in html and "<strong>" not in html
    assert "<code>/tmp/logs/hardenctl-error-1.log</code>" in html and "Exit code 3" in html
    fence = MarkdownIt("commonmark").render(failure_summary(2, "hardenctl", "```"))  # a line that would close ```
    assert '<pre><code class="language-text">```\n</code></pre>' in fence and "Exit code 2" in fence
    usage = MarkdownIt("commonmark").render(failure_summary(2, "hardenctl", "error: No such command 'x'."))
    assert "Exit code 2" in usage and "traceback" not in usage
    assert "could not be written" in failure_summary(3, "hardenctl", "internal error: X", None)
