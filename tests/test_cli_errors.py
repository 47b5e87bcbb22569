"""Bad input: a one-line error naming problem and fix, exit code 2, no traceback, no output file."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from testing_helpers import read_checkpoint


class NotAWeight:  # pickled by reference: loading it would import and run code from this module
    pass


def assert_clean_failure(cli, tmp_path, *args, expect: str):
    out_file = tmp_path / "out" / "report.json"
    code, out, err = cli("eval", *args, "--quiet", "--n", "8", "--attacks", "fgsm", "--report", out_file)
    assert code == 2, (code, err)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert "Traceback" not in err and expect.lower() in err.lower(), err
    assert not out_file.exists() and not (tmp_path / "out").exists()


def test_missing_checkpoint(cli, tmp_path):
    assert_clean_failure(cli, tmp_path, tmp_path / "nope.safetensors", "--data", "digits", expect="not found")


def test_missing_data(cli, tmp_path, digits_model_path):
    assert_clean_failure(cli, tmp_path, digits_model_path, "--data", tmp_path / "nowhere", expect="data not found")


def test_directory_without_images(cli, tmp_path, digits_model_path):
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    (tmp_path / "empty" / "cat" / "notes.txt").write_text("hi")
    assert_clean_failure(cli, tmp_path, digits_model_path, "--data", tmp_path / "empty", expect="no images found")


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_safetensors(cli, tmp_path, digits_model_path, damage):
    raw = digits_model_path.read_bytes()
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(raw[: len(raw) // 2] if damage == "truncate" else b"\x00" * 64)
    assert_clean_failure(cli, tmp_path, bad, "--data", "digits", expect="corrupt")


def test_pickled_code_checkpoint_is_refused_not_run(cli, tmp_path, digits_model_path):
    state, _ = read_checkpoint(digits_model_path)
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": state, "hook": NotAWeight()}, path)
    assert_clean_failure(cli, tmp_path, path, "--data", "digits", "--arch", "test_resnet", expect="will not unpickle")


def test_truncated_torch_checkpoint(cli, tmp_path, digits_model_path):
    state, _ = read_checkpoint(digits_model_path)
    path = tmp_path / "half.pt"
    torch.save(state, path)
    path.write_bytes(path.read_bytes()[:1000])
    assert_clean_failure(
        cli, tmp_path, path, "--data", "digits", "--arch", "test_resnet", expect="cannot read checkpoint"
    )


def test_wrong_num_classes(cli, tmp_path, digits_model_path):
    assert_clean_failure(
        cli, tmp_path, digits_model_path, "--data", "digits", "--num-classes", "7", expect="--num-classes 10"
    )


def test_labels_out_of_range(cli, tmp_path, digits_model_path):
    x = np.zeros((4, 8, 8, 1), np.uint8)
    np.savez(tmp_path / "d.npz", x=x, y=np.array([0, 1, 12, 3]))
    assert_clean_failure(cli, tmp_path, digits_model_path, "--data", tmp_path / "d.npz", expect="label 12")


@pytest.mark.parametrize(
    "eps,expect", [("-1", ">= 0"), ("abc", "not a number"), ("1/0", "not a number"), ("2", "exceeds 1")]
)
def test_bad_eps(cli, tmp_path, digits_model_path, eps, expect):
    assert_clean_failure(cli, tmp_path, digits_model_path, "--data", "digits", "--eps", eps, expect=expect)


def test_unknown_attack(cli, tmp_path, digits_model_path):
    out_file = tmp_path / "r.json"
    code, _, err = cli("eval", digits_model_path, "--data", "digits", "--attacks", "pgd,cw", "--report", out_file)
    assert code == 2 and "unknown attack 'cw'" in err and "apgd-ce" in err and not out_file.exists()


def test_repeated_attack(cli, tmp_path, digits_model_path):
    code, _, err = cli("eval", digits_model_path, "--data", "digits", "--attacks", "pgd,pgd")
    assert code == 2 and "more than once" in err


@pytest.mark.parametrize(
    "args,expect",
    [
        (("--batch-size", "0"), "--batch-size must be at least 1"),
        (("--batch-size", "big"), "--batch-size must be a whole number or auto"),
        (("--eval-precision", "fp16"), "unknown --eval-precision 'fp16'"),
        (("--eval-precision", "bf16", "--suite", "autoattack"), "reference autoattack"),
    ],
)
def test_bad_batch_size_and_precision(cli, tmp_path, digits_model_path, args, expect):
    if "--suite" in args:  # the reference runs only without --attacks
        out_file = tmp_path / "out" / "report.json"
        code, _, err = cli(
            "eval", digits_model_path, "--data", "digits", "--quiet", "--n", "8", *args, "--report", out_file
        )
        assert code == 2 and len(err.strip().splitlines()) == 1 and expect in err.lower(), err
        assert not out_file.exists()
        return
    assert_clean_failure(cli, tmp_path, digits_model_path, "--data", "digits", *args, expect=expect)


def test_unknown_suite(cli, tmp_path, digits_model_path):
    code, _, err = cli("eval", digits_model_path, "--data", "digits", "--suite", "heavy")
    assert code == 2 and "unknown suite" in err


def test_image_size_mismatch_of_an_in_memory_dataset(tmp_path, digits_model_path):
    """Data given by path is prepared with the model's data config; a ready-made dataset of another size is refused."""
    import hardenctl
    from hardenctl.data import ArrayDataset
    from hardenctl.errors import UserError

    model = hardenctl.load_model(digits_model_path)
    data = ArrayDataset(
        torch.zeros(4, 1, 12, 12, dtype=torch.uint8), torch.arange(4), [str(i) for i in range(10)], "memory"
    )
    with pytest.raises(UserError, match="images are 12x12 but the model is declared for 8x8"):
        hardenctl.load_data(data, model)


@pytest.mark.parametrize(
    "option,value,expect",
    [
        ("--crop-pct", "0", "--crop-pct must be in [0.05, 1]"),
        ("--crop-pct", "2", "--crop-pct must be in [0.05, 1]"),
        ("--crop-pct", "1e-300", "--crop-pct must be in [0.05, 1]"),
        ("--interpolation", "cubic", "unknown interpolation 'cubic'"),
        ("--crop-mode", "zoom", "unknown crop mode 'zoom'"),
        ("--workers", "-1", "--workers must be >= 0"),
    ],
)
def test_bad_preprocessing_flags(cli, tmp_path, digits_model_path, option, value, expect):
    assert_clean_failure(cli, tmp_path, digits_model_path, "--data", "digits-test", option, value, expect=expect)


def test_nan_in_data(cli, tmp_path, digits_model_path):
    x = np.full((4, 8, 8, 1), 0.5, np.float32)
    x[2, 3, 3, 0] = np.nan
    np.savez(tmp_path / "d.npz", x=x, y=np.array([0, 1, 2, 3]))
    assert_clean_failure(cli, tmp_path, digits_model_path, "--data", tmp_path / "d.npz", expect="NaN")


def test_npz_with_pickled_objects(cli, tmp_path, digits_model_path):
    np.savez(tmp_path / "d.npz", x=np.array([{"a": 1}], dtype=object), y=np.array([0]))
    assert_clean_failure(cli, tmp_path, digits_model_path, "--data", tmp_path / "d.npz", expect="pickled")


def test_cuda_requested_without_cuda(cli, tmp_path, digits_model_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    assert_clean_failure(
        cli, tmp_path, digits_model_path, "--data", "digits", "--device", "cuda", expect="CUDA is not available"
    )


def test_unknown_arch(cli, tmp_path, digits_model_path):
    state, _ = read_checkpoint(digits_model_path)
    torch.save(state, tmp_path / "w.pt")
    assert_clean_failure(
        cli,
        tmp_path,
        tmp_path / "w.pt",
        "--data",
        "digits",
        "--arch",
        "resnet_9000",
        expect="unknown timm architecture",
    )


def test_usage_error_is_exit_2(cli):
    code, _, err = cli("eval")
    assert code == 2 and "Traceback" not in err


def test_cifar_pickle_with_code_is_refused(cli, tmp_path, digits_model_path):
    directory = tmp_path / "cifar-10-batches-py"
    directory.mkdir()
    (directory / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"a"]}))
    (directory / "test_batch").write_bytes(pickle.dumps({b"data": NotAWeight(), b"labels": [0]}))
    assert_clean_failure(cli, tmp_path, digits_model_path, "--data", directory, expect="refusing to load")


def test_empty_dataset_is_never_evaluated(cli, tmp_path, digits_model_path):
    path = tmp_path / "empty.npz"
    np.savez(path, x=np.zeros((0, 8, 8, 1), np.uint8), y=np.zeros((0,), np.int64))
    assert_clean_failure(cli, tmp_path, digits_model_path, "--data", path, expect="no samples")


def test_help_version_and_argument_errors_do_not_import_torch():
    """torch and timm take seconds to import: --help, --version and a mistyped path must answer without them."""
    import subprocess
    import sys

    probe = (
        "import sys; from hardenctl.cli import main; code = main(sys.argv[1:]); "
        "assert 'torch' not in sys.modules and 'timm' not in sys.modules, 'torch imported'; print('exit', code)"
    )
    for args in (["--help"], ["--version"], ["eval", "nope.safetensors", "--data", "digits"], ["recipes"]):
        done = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True)
        assert done.returncode == 0, (args, done.stderr[-500:])
        assert "exit 2" in done.stdout if args[0] == "eval" else "exit 0" in done.stdout, (args, done.stdout)
