"""The exit-code contract on the output side (issue 28): every output path is checked before any work, a failed gate
is never reported as a crash, one writer per folder, and settings are refused when parsed."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hardenctl.files import LOCK_NAME, FolderLock

EVAL = ["--data", "digits-test", "--n", "8", "--attacks", "fgsm", "--eps", "0.1"]


def one_line_error(code: int, err: str, *named: str) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    for word in named:
        assert word in lines[0], (word, lines[0])


@pytest.fixture
def a_file(tmp_path) -> Path:
    path = tmp_path / "plain-file"
    path.write_text("not a folder")
    return path


@pytest.mark.parametrize(
    "option, relative, named",
    [
        ("--report", "plain-file/report.json", "is a file, not a folder"),
        ("--markdown", "plain-file/r.md", "is a file, not a folder"),
        ("--junit", ".", "is a folder"),
        ("--html", "plain-file/r.html", "is a file, not a folder"),
        ("--samples", "plain-file/s.jsonl", "is a file, not a folder"),
        ("--robustbench-json", ".", "is a folder"),
        ("--resume-dir", "plain-file", "is a file"),
        ("--save-adversarial", "plain-file/adv", "is a file, not a folder"),
    ],
)
def test_an_unwritable_output_is_refused_before_the_model_is_loaded(cli, tmp_path, a_file, option, relative, named):
    """The model path does not even exist: the output is checked first, so nothing is loaded or attacked."""
    os.chdir(tmp_path)
    code, _, err = cli("eval", tmp_path / "no-such-model.safetensors", *EVAL, option, relative)
    if option in ("--junit", "--robustbench-json"):  # "." is the working folder: a folder where a file goes
        named = "is a folder"
    one_line_error(code, err, option, named)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain-file"]


def test_a_folder_nobody_may_write_is_refused_up_front(cli, digits_model_path):
    code, _, err = cli("eval", digits_model_path, *EVAL, "--report", "/proc/hardenctl-report.json")
    one_line_error(code, err, "--report", "/proc is not writable")


def test_the_markdown_pictures_beside_it_are_checked_too(cli, digits_model_path, tmp_path):
    (tmp_path / "r.pictures.png").mkdir()
    code, _, err = cli("eval", digits_model_path, *EVAL, "--markdown", tmp_path / "r.md")
    one_line_error(code, err, "pictures.png", "is a folder")


def test_two_outputs_on_one_path_are_refused(cli, digits_model_path, tmp_path):
    code, _, err = cli(
        "eval", digits_model_path, *EVAL, "--report", tmp_path / "r.json", "--markdown", tmp_path / "r.json"
    )
    one_line_error(code, err, "--report and --markdown are the same file")
    assert list(tmp_path.iterdir()) == []


def test_a_bad_step_summary_path_is_refused_before_the_work(cli, digits_model_path, tmp_path, a_file, monkeypatch):
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(a_file / "summary.md"))
    code, out, err = cli("eval", digits_model_path, *EVAL, "--report", tmp_path / "r.json")
    assert code == 2 and "$GITHUB_STEP_SUMMARY" in err and not (tmp_path / "r.json").exists()


def test_a_failed_gate_stays_exit_1_when_an_output_fails_after_the_verdict(
    cli, digits_model_path, tmp_path, monkeypatch
):
    """A full disk after the evaluation: the gate's line and annotation stand, the file is named on one more line."""
    import hardenctl.report.outputs as outputs

    real = outputs.atomic_write

    def disk_full(path, data):
        if Path(path).suffix == ".md":
            raise OSError(28, "No space left on device")
        real(path, data)

    monkeypatch.setattr(outputs, "atomic_write", disk_full)
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "summary.md"))
    code, out, err = cli(
        "eval",
        digits_model_path,
        *EVAL,
        "--min-robust-acc",
        "0.99",
        "--report",
        tmp_path / "r.json",
        "--markdown",
        tmp_path / "r.md",
        "--quiet",
    )
    assert code == 1, err
    assert "gate failed: min_robust_acc" in err and "::error title=hardenctl gate failed%3A min_robust_acc" in out
    assert f"error: could not write {tmp_path / 'r.md'} (No space left on device); the verdict stands: exit 1" in err
    assert (tmp_path / "r.json").exists() and "internal error" not in err


def test_a_passed_gate_stays_exit_0_when_an_output_fails_after_the_verdict(
    cli, digits_model_path, tmp_path, monkeypatch
):
    import hardenctl.report.outputs as outputs

    def disk_full(path, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(outputs, "atomic_write", disk_full)
    code, _, err = cli(
        "eval", digits_model_path, *EVAL, "--min-clean-acc", "0.1", "--report", tmp_path / "r.json", "--quiet"
    )
    assert code == 0 and "could not write" in err and "the verdict stands: exit 0" in err


def test_a_bug_while_writing_with_every_gate_passed_is_exit_3(cli, digits_model_path, tmp_path, monkeypatch):
    import hardenctl.report.outputs as outputs

    def broken(report, *args):
        raise RuntimeError("renderer bug")

    monkeypatch.setattr(outputs, "render_markdown", broken)
    code, _, err = cli("eval", digits_model_path, *EVAL, "--markdown", tmp_path / "r.md", "--quiet")
    assert code == 3 and "renderer bug" in err and "internal error" in err


@pytest.mark.parametrize(
    "extra, named",
    [
        (["--attacks", ","], "--attacks ',' names no attack"),
        (["--attacks", " , "], "names no attack"),
    ],
)
def test_an_empty_attack_list_is_refused_not_replaced_by_the_suite(cli, digits_model_path, extra, named):
    code, _, err = cli("eval", digits_model_path, "--data", "digits-test", "--n", "8", *extra)
    one_line_error(code, err, named)


def test_word_options_are_case_insensitive_everywhere(cli, digits_model_path, tmp_path):
    code, _, err = cli(
        "eval",
        digits_model_path,
        "--data",
        "digits-test",
        "--n",
        "4",
        "--attacks",
        "FGSM",
        "--eps",
        "0.1",
        "--eval-precision",
        "FP32",
        "--norm",
        "LINF",
        "--gate-on",
        "LOWER",
        "--device",
        "CPU",
        "--batch-size",
        "AUTO",
        "--allow-check",
        "EOT_USED_FOR_RANDOMIZED_MODEL",
        "--report",
        tmp_path / "r.json",
        "--quiet",
    )
    assert code == 0, err
    report = (tmp_path / "r.json").read_text()
    assert '"norm": "linf"' in report and '"gate_on": "lower"' in report and '"fgsm"' in report


def tiny_harden(model: Path, out: Path, *extra: str) -> list[str]:
    return [
        "harden",
        str(model),
        "--recipe",
        "pgd-at",
        "--data",
        "digits-train",
        "--epochs",
        "1",
        "--lr",
        "0.01",
        "--set",
        "attack_steps=1",
        "--set",
        "monitor_n=16",
        "--eval-data",
        "digits-test",
        "--eval-n",
        "8",
        "--suite",
        "quick",
        "--eps",
        "0.1",
        "--out",
        str(out),
        "--quiet",
        *extra,
    ]


@pytest.mark.parametrize(
    "setting, named",
    [
        (["--set", "lr_sweep=[]"], "lr_sweep is an empty list"),
        (["--lr", "-1"], "--lr -1 is out of range; --lr must be > 0"),
        (["--set", "schedule=sometimes"], "schedule='sometimes' is not a valid choice"),
    ],
)
def test_settings_are_refused_when_parsed(cli, digits_model_path, tmp_path, setting, named):
    """Refused as the recipe is read (before the model is loaded), not mid-run with exit 3."""
    code, _, err = cli(*tiny_harden(digits_model_path, tmp_path / "out"), *setting)
    one_line_error(code, err, named)
    assert not (tmp_path / "out").exists()


def test_recipe_words_are_case_insensitive(cli, digits_model_path, tmp_path):
    code, _, err = cli(
        *tiny_harden(digits_model_path, tmp_path / "out"), "--set", "schedule=COSINE", "--set", "attack=PGD"
    )
    assert code == 0, err
    assert "schedule: cosine" in (tmp_path / "out" / "recipe.yaml").read_text()


@pytest.mark.parametrize(
    "layout, named",
    [
        ("under-a-file", "is a file, not a folder"),
        ("readme-is-a-folder", "README.md is a folder"),
        ("out-is-a-file", "is a file"),
    ],
)
def test_harden_refuses_an_unwritable_out_before_loading_anything(
    cli, digits_model_path, tmp_path, a_file, layout, named
):
    out = {"under-a-file": a_file / "out", "readme-is-a-folder": tmp_path / "out", "out-is-a-file": a_file}[layout]
    if layout == "readme-is-a-folder":
        (out / "README.md").mkdir(parents=True)
    code, _, err = cli(*tiny_harden(digits_model_path, out))  # refused before the model is loaded
    one_line_error(code, err, "--out", named)


def test_harden_into_a_folder_of_someone_elses_files_needs_overwrite(cli, digits_model_path, tmp_path):
    out = tmp_path / "model-folder"
    out.mkdir()
    (out / "README.md").write_text("my card")
    (out / "notes.txt").write_text("mine")
    code, _, err = cli(*tiny_harden(digits_model_path, out))
    one_line_error(code, err, "holds files hardenctl did not write", "notes.txt", "--overwrite")
    assert (out / "README.md").read_text() == "my card"
    code, _, err = cli(*tiny_harden(digits_model_path, out, "--overwrite"))
    assert code == 0, err
    assert (out / "notes.txt").read_text() == "mine" and (out / "model.safetensors").exists()
    assert not (out / LOCK_NAME).exists()  # the lock goes with the run


def test_a_finished_run_is_replaced_only_with_overwrite(cli, digits_model_path, tmp_path):
    out = tmp_path / "run"
    assert cli(*tiny_harden(digits_model_path, out))[0] == 0
    code, _, err = cli(*tiny_harden(digits_model_path, out))
    one_line_error(code, err, "already holds a harden run", "--resume", "--overwrite")
    code, _, err = cli(*tiny_harden(digits_model_path, out, "--overwrite", "--resume"))
    one_line_error(code, err, "give one of them")


def test_a_second_run_into_a_folder_in_use_is_refused_naming_the_first(cli, digits_model_path, tmp_path):
    out = tmp_path / "busy"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"""
import time
from hardenctl.files import FolderLock
with FolderLock({str(out)!r}, "--out"):
    print("locked", flush=True)
    time.sleep(60)
""",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        code, _, err = cli(*tiny_harden(digits_model_path, out))
        one_line_error(code, err, "--out", "is in use by another hardenctl run", f"pid {holder.pid}")
    finally:
        holder.kill()
        holder.wait()
    # killed with SIGKILL: the kernel released the lock, so the folder is free again (never stale)
    code, _, err = cli(*tiny_harden(digits_model_path, out))
    assert code == 0, err


def test_two_concurrent_harden_runs_into_one_folder_one_is_refused(digits_model_path, tmp_path):
    out = tmp_path / "same"
    args = [sys.executable, "-m", "hardenctl", *tiny_harden(digits_model_path, out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # the first run trains long enough (seconds) for the second to start and find the folder held
    first = subprocess.Popen(
        args + ["--epochs", "6", "--set", "attack_steps=5"], stderr=subprocess.PIPE, text=True, env=env
    )
    deadline = time.monotonic() + 120
    while not (out / LOCK_NAME).exists() and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.05)
    second = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    first_err = first.communicate(timeout=300)[1]
    assert first.returncode == 0, first_err
    assert second.returncode == 2 and "is in use by another hardenctl run" in second.stderr, second.stderr


def test_the_lock_removes_a_folder_it_made_when_nothing_was_written(tmp_path):
    with FolderLock(tmp_path / "new", "--out"):
        assert (tmp_path / "new" / LOCK_NAME).exists()
    assert not (tmp_path / "new").exists()
