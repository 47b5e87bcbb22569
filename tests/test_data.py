"""Dataset loaders: npz, ImageFolder, CIFAR python batches, built-in digits."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from testing_helpers import CIFAR_DIR
from hardenctl.data import load_dataset
from hardenctl.errors import UserError


def test_digits_are_real_and_split_disjointly():
    full, train, test = load_dataset("digits"), load_dataset("digits-train"), load_dataset("digits-test")
    assert len(full) == 1797 and len(train) + len(test) == 1797
    assert full.x.dtype == torch.uint8 and full.x.shape[1:] == (1, 8, 8) and int(full.x.max()) == 255
    train_rows = {bytes(r) for r in train.x.flatten(1).numpy()}
    assert sum(bytes(r) in train_rows for r in test.x.flatten(1).numpy()) < 10  # a few duplicates exist in the raw set


def test_npz_accepts_nchw_and_grey(tmp_path):
    np.savez(tmp_path / "a.npz", x=np.zeros((5, 3, 6, 6), np.uint8), y=np.arange(5))
    np.savez(tmp_path / "b.npz", x=np.zeros((5, 6, 6), np.uint8), y=np.arange(5))
    assert load_dataset(str(tmp_path / "a.npz")).x.shape == (5, 3, 6, 6)
    assert load_dataset(str(tmp_path / "b.npz")).x.shape == (5, 1, 6, 6)


def test_image_folder_interleaves_classes(tmp_path):
    for label, name in enumerate(["cat", "dog"]):
        (tmp_path / name).mkdir()
        for i in range(3):
            Image.fromarray(np.full((4, 4, 3), 40 * label + i, np.uint8)).save(tmp_path / name / f"{i}.png")
    data = load_dataset(str(tmp_path), n=4)
    assert data.class_names == ["cat", "dog"]
    assert data.y.tolist() == [0, 1, 0, 1]
    assert data.x.shape == (4, 3, 4, 4) and int(data.x[1, 0, 0, 0]) == 40


def test_image_folder_size_mismatch_needs_resize(tmp_path):
    (tmp_path / "a").mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "a" / "0.png")
    Image.fromarray(np.zeros((6, 6, 3), np.uint8)).save(tmp_path / "a" / "1.png")
    with pytest.raises(UserError, match="--resize"):
        load_dataset(str(tmp_path))
    assert load_dataset(str(tmp_path), size=(5, 5)).image_size == (5, 5)


def test_cifar10_python_batches(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
    (tmp_path / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"plane", b"car"]}))
    (tmp_path / "test_batch").write_bytes(pickle.dumps({b"data": data, b"labels": [0, 1, 1, 0], b"batch_label": b"test"}))
    loaded = load_dataset(str(tmp_path), split="test")
    assert loaded.class_names == ["plane", "car"] and loaded.y.tolist() == [0, 1, 1, 0]
    assert loaded.x.shape == (4, 3, 32, 32)
    assert np.array_equal(loaded.x[2].numpy().reshape(-1), data[2])  # channel-major CIFAR rows, unchanged
    with pytest.raises(UserError, match="data_batch_1"):
        load_dataset(str(tmp_path), split="train")


def test_resize_keeps_dtype_and_records_a_note():
    data = load_dataset("digits", n=10).resized((16, 16))
    assert data.x.dtype == torch.uint8 and data.image_size == (16, 16) and "resized" in data.notes[0]


@pytest.mark.skipif(not CIFAR_DIR.is_dir(), reason="../shared/data/cifar10 absent")
def test_shared_cifar10_test_prefix():
    data = load_dataset(str(CIFAR_DIR / "test.npz"), n=20)
    assert data.class_names[3] == "cat"
    assert data.y.tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1, 0, 9, 5, 7, 9, 8, 5, 7, 8, 6]  # the canonical first labels
