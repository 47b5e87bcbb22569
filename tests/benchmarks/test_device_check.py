"""The prepared GPU check dry-runs on CPU (`--tiny`), so it has not rotted the day a GPU is lent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_device_check_dry_runs_every_step_on_cpu(tmp_path):
    out = tmp_path / "device_check.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "device_check.py"), "--tiny", "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["tiny"] and result["env"]["device"] == "cpu"
    steps = result["steps"]
    assert set(steps) == {
        "train_bare",
        "train_fp32",
        "train_model",
        "suite_fp32",
        "suite_bf16_search",
        "autoattack_reference",
    }
    assert all("error" not in step and "skipped" not in step for step in steps.values()), steps
    assert steps["train_fp32"]["result"]["images_per_s"] > 0 and steps["suite_fp32"]["result"]["n"] == 8
    assert steps["suite_bf16_search"]["result"]["execution"]["search_precision"] == "bf16"
    assert steps["suite_fp32"]["result"]["execution"]["batch_size_auto"]["chosen"] == 8
    assert set(result["ratios"]) == {
        "bare_loop_over_engine_fp32",
        "suite_fp32_over_autoattack",
        "suite_bf16_over_autoattack",
        "bf16_search_robust_minus_fp32",
        "robust_under_bf16_not_fp32",
    }
    assert not list(tmp_path.glob("*.tmp"))
