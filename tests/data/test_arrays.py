"""In-memory sources (npz, CIFAR python batches, built-in digits) and their preparation like folders."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from photo_helpers import CIFAR_DIR, pattern, save
from hardenctl.data import ArrayDataset, Dataset, load_dataset
from hardenctl.errors import UserError
from hardenctl.models.data_config import DataConfig


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


def test_names_are_known_only_when_the_data_brings_them(tmp_path):
    np.savez(tmp_path / "plain.npz", x=np.zeros((2, 4, 4), np.uint8), y=np.arange(2))
    np.savez(tmp_path / "named.npz", x=np.zeros((2, 4, 4), np.uint8), y=np.arange(2), class_names=np.array(["cat", "dog"]))
    plain, named = load_dataset(str(tmp_path / "plain.npz")), load_dataset(str(tmp_path / "named.npz"))
    assert not plain.names_known and plain.class_names == ["0", "1"]
    assert named.names_known and named.head(1).names_known and named.take([1]).with_channels(3).names_known
    assert not load_dataset("digits", n=4).names_known  # "0".."9" are the labels themselves
    assert isinstance(named, Dataset)  # the protocol the engines are written against


def test_cifar10_python_batches(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
    (tmp_path / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"plane", b"car"]}))
    (tmp_path / "test_batch").write_bytes(pickle.dumps({b"data": data, b"labels": [0, 1, 1, 0], b"batch_label": b"test"}))
    loaded = load_dataset(str(tmp_path), split="test")
    assert loaded.class_names == ["plane", "car"] and loaded.y.tolist() == [0, 1, 1, 0] and loaded.names_known
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


def test_arrays_are_prepared_exactly_as_folders(tmp_path):
    rng = np.random.default_rng(3)
    images = [pattern(rng, 20, 28) for _ in range(4)]
    for i, image in enumerate(images):  # folder order is class-interleaved: 0, 1, 0, 1
        save(tmp_path / "photos" / f"c{i % 2}" / f"{i // 2}.png", image)
    np.savez(tmp_path / "same.npz", x=np.stack(images), y=np.array([0, 1, 0, 1]))
    config = DataConfig(input_size=(16, 16), interpolation="bicubic", crop_pct=0.9)
    arrays = load_dataset(str(tmp_path / "same.npz"), data_config=config)
    folder = load_dataset(str(tmp_path / "photos"), data_config=config, workers=0)
    assert arrays.image_size == (16, 16) and arrays.x.dtype == torch.uint8 and "crop_pct 0.9" in arrays.notes[-1]
    assert torch.equal(arrays.pixels(0, 4), folder.pixels(0, 4)) and arrays.sha256() == folder.sha256()


def test_arrays_at_the_input_size_pass_unless_a_crop_is_declared():
    digits = load_dataset("digits", n=5)
    assert torch.equal(load_dataset("digits", n=5, data_config=DataConfig(input_size=(8, 8))).x, digits.x)
    cropped = load_dataset("digits", n=5, data_config=DataConfig(input_size=(8, 8), crop_pct=0.75))
    assert cropped.image_size == (8, 8) and cropped.channels == 1 and not torch.equal(cropped.x, digits.x)


def test_in_chans_repeats_grey_arrays_and_size_leaves_them_alone():
    assert load_dataset("digits", n=3).channels == 1
    rgb = load_dataset("digits", n=3, in_chans=3)
    assert rgb.x.shape == (3, 3, 8, 8) and torch.equal(rgb.x[:, 2], rgb.x[:, 0])
    assert load_dataset("digits", n=3, size=(16, 16)).image_size == (8, 8)  # the old size= resized folders only


def test_float_arrays_are_quantised_for_resizing(tmp_path):
    np.savez(tmp_path / "f.npz", x=np.random.default_rng(0).random((2, 10, 10, 3)), y=np.array([0, 1]))
    data = load_dataset(str(tmp_path / "f.npz"), data_config=DataConfig(input_size=(8, 8)))
    assert data.x.dtype == torch.uint8 and data.image_size == (8, 8) and "quantised" in data.notes[0]
    assert isinstance(data, ArrayDataset)


def test_image_dataset_is_the_deprecated_name_of_array_dataset():
    """In timm ``ImageDataset`` is the folder dataset: ours is ``ArrayDataset``; the old name still works, and warns."""
    import hardenctl.data

    with pytest.warns(DeprecationWarning, match="ArrayDataset"):
        assert hardenctl.data.ImageDataset is ArrayDataset
    assert "ImageDataset" not in hardenctl.data.__all__


def test_arrays_of_other_channel_counts_cannot_be_transformed():
    data = ArrayDataset(torch.zeros(2, 2, 8, 8, dtype=torch.uint8), torch.tensor([0, 1]), ["a", "b"], "two-channel")
    with pytest.raises(UserError, match="two-channel has 2 channels; images can be read and transformed as 1 .grey. or 3"):
        data.image(0)
