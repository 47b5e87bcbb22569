"""In-memory sources (npz, CIFAR python batches, built-in digits) and their preparation like folders."""

from __future__ import annotations

import json
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
    np.savez(
        tmp_path / "named.npz", x=np.zeros((2, 4, 4), np.uint8), y=np.arange(2), class_names=np.array(["cat", "dog"])
    )
    plain, named = load_dataset(str(tmp_path / "plain.npz")), load_dataset(str(tmp_path / "named.npz"))
    assert not plain.names_known and plain.class_names == ["0", "1"]
    assert named.names_known and named.head(1).names_known and named.take([1]).with_channels(3).names_known
    assert not load_dataset("digits", n=4).names_known  # "0".."9" are the labels themselves
    assert isinstance(named, Dataset)  # the protocol the engines are written against


def test_cifar10_python_batches(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
    (tmp_path / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"plane", b"car"]}))
    (tmp_path / "test_batch").write_bytes(
        pickle.dumps({b"data": data, b"labels": [0, 1, 1, 0], b"batch_label": b"test"})
    )
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
    with pytest.raises(
        UserError, match="two-channel has 2 channels; images can be read and transformed as 1 .grey. or 3"
    ):
        data.image(0)


# ---------------------------------------------------------------------------------------------
# classes.json beside an .npz: every valid form names the classes, anything else is a one-line error
# ---------------------------------------------------------------------------------------------
def npz_with_names_file(tmp_path, content: bytes | str, labels=(0, 1, 2, 0)):
    folder = tmp_path / "set"
    folder.mkdir(exist_ok=True)
    np.savez(folder / "d.npz", x=np.zeros((len(labels), 4, 4), np.uint8), y=np.array(labels))
    (folder / "classes.json").write_bytes(content.encode() if isinstance(content, str) else content)
    return folder / "d.npz"


@pytest.mark.parametrize(
    "content",
    [
        '["cat", "dog", "emu"]',
        # as the shared CIFAR file
        '{"classes": ["cat", "dog", "emu"], "label_to_name": {"0": "cat"}, "source": [1, 2]}',
        '{"2": "emu", "0": "cat", "1": "dog"}',  # ids to names
        b'\xef\xbb\xbf["cat", "dog", "emu"]',  # a UTF-8 byte-order mark, as some editors write
        '["cat", "dog", "emu", "yak"]',  # more names than labels: the data need not hold every class
    ],
)
def test_classes_json_forms_beside_an_npz(tmp_path, content):
    data = load_dataset(str(npz_with_names_file(tmp_path, content)))
    assert data.class_names[:3] == ["cat", "dog", "emu"] and data.names_known


def test_classes_json_names_in_any_script(tmp_path):
    names = ["猫", "犬", "Ωmega | ünïcode"]
    data = load_dataset(str(npz_with_names_file(tmp_path, json.dumps(names, ensure_ascii=False))))
    assert data.class_names == names


BAD_CLASSES_JSON = [  # (content, what the error says); each used to crash (exit 3) or be dropped silently
    (b'["cat", "dog", "\xff\xfe"]', "is not UTF-8 text (byte 0xff at offset 16)"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ('["cat", "dog", "emu"', "is not valid JSON (Expecting ',' delimiter at line 1 column 21, where the file ends"),
    ('{"classes": ["cat", "dog"', "where the file ends: is it cut short?"),
    ("", "is not valid JSON (Expecting value at line 1 column 1"),
    ("[cat, dog]", "is not valid JSON (Expecting value at line 1 column 2)"),
    ("[1, 2, 3]", "entry 0 (1) is not a string"),
    ('["cat", null, "emu"]', "entry 1 (None) is not a string"),
    ('["cat", ["dog"], "emu"]', "entry 1 (a list of 1 item) is not a string"),
    ('{"classes": ["cat", 5, "emu"]}', "'classes' entry 1 (5) is not a string"),
    ('{"classes": "cat,dog,emu"}', "'classes' is 'cat,dog,emu', not a list of names"),
    ('{"0": "cat", "1": 7, "2": "emu"}', "the name of '1' (7) is not a string"),
    ('{"wnid_to_name": ["cat"]}', "'wnid_to_name' is a list of 1 item, not an object of ids to names"),
    ('{"wnid_to_name": {"n01": "cat"}}', "maps 'n01' to a name, but the classes of an .npz are numbered"),
    ('{"0": "cat", "2": "emu"}', "names class 2 but not class 1"),
    ('{"00": "cat", "1": "dog", "2": "emu"}', "maps '00' to a name"),
    ("5", "holds 5, not a list of class names nor an object"),
    ('"cat"', "holds 'cat', not a list of class names nor an object"),
    ('["cat", "dog"]', "label 2 but only 2 class names (from"),
    ("[]", "label 2 but only 0 class names (from"),
    ('["cat", " ", "emu"]', "entry 1 (' ') is blank"),
    ('["cat", "d\\nog", "emu"]', "entry 1 ('d\\nog') holds the character '\\n'"),
    ('["cat", "\\ud800", "emu"]', "holds the character '\\ud800'"),
    ('["cat", "' + "x" * 1001 + '", "emu"]', "is longer than 1000 characters"),
    ("[" + "9" * 5000 + "]", "is not valid JSON (Exceeds the limit"),
]


def short_id(value) -> str:
    """A test id for a long generated value (100,000 brackets would make an unreadable one)."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:30]}...({len(text)} chars)"


@pytest.mark.parametrize("content,expect", BAD_CLASSES_JSON, ids=[short_id(content) for content, _ in BAD_CLASSES_JSON])
def test_a_bad_classes_json_beside_an_npz_is_a_one_line_error(tmp_path, content, expect):
    path = npz_with_names_file(tmp_path, content)
    with pytest.raises(UserError) as caught:
        load_dataset(str(path))
    message = str(caught.value)
    assert "\n" not in message and len(message) < 400, message
    assert str(path.parent / "classes.json") in message and expect in message, message
    assert "; " in message  # the fix: the forms that work, or how to save it


def test_an_npz_with_its_own_names_never_reads_a_classes_json(tmp_path):
    path = npz_with_names_file(tmp_path, b"\xff not json at all")
    np.savez(path, x=np.zeros((2, 4, 4), np.uint8), y=np.arange(2), class_names=np.array([b"cat", b"dog"]))
    assert load_dataset(str(path)).class_names == ["cat", "dog"]  # bytes decoded, not "b'cat'"


@pytest.mark.parametrize(
    "names,expect",
    [
        (np.array([["cat", "dog"]]), "class_names has shape (1, 2), not one name per class"),
        (np.array([b"cat", b"\xff"]), "class_names entry 1 (b'\\xff') is not UTF-8 text"),
        (np.array(["cat", "d\nog"]), "class_names entry 1 ('d\\nog') holds the character '\\n'"),
    ],
)
def test_bad_class_names_in_an_npz(tmp_path, names, expect):
    np.savez(tmp_path / "d.npz", x=np.zeros((2, 4, 4), np.uint8), y=np.arange(2), class_names=names)
    with pytest.raises(UserError) as caught:
        load_dataset(str(tmp_path / "d.npz"))
    assert expect in str(caught.value) and "\n" not in str(caught.value), str(caught.value)


# ---------------------------------------------------------------------------------------------
# CIFAR batches: a pickle that would run code is refused by name, a malformed one is a one-line error
# ---------------------------------------------------------------------------------------------
def cifar_folder(tmp_path, batch, meta=None):
    meta = meta if meta is not None else {b"label_names": [b"plane", b"car"]}
    (tmp_path / "batches.meta").write_bytes(pickle.dumps(meta))
    (tmp_path / "test_batch").write_bytes(pickle.dumps(batch))
    return tmp_path


def test_a_cifar_pickle_that_would_run_code_is_refused_by_name(tmp_path):
    import collections

    folder = cifar_folder(tmp_path, {b"data": collections.OrderedDict(), b"labels": [0]})
    with pytest.raises(UserError) as caught:
        load_dataset(str(folder), split="test")
    message = str(caught.value)
    assert "\n" not in message
    assert "it would import collections.OrderedDict, and hardenctl will not unpickle code" in message
    assert message.endswith("or save the images as an .npz: np.savez(path, x=uint8_images, y=labels)"), message


RGB_ROWS = np.zeros((2, 3072), np.uint8)


@pytest.mark.parametrize(
    "batch,meta,expect",
    [
        ({b"labels": [0, 1]}, None, "has no data"),
        ([RGB_ROWS, [0, 1]], None, "has no data, labels"),
        ({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, None, "is not N rows of 3072 pixels"),
        ({b"data": RGB_ROWS, b"labels": [0]}, None, "is not N rows of 3072 pixels"),
        ({b"data": RGB_ROWS, b"labels": ["a", "b"]}, None, "is not N rows of 3072 pixels"),
        ({b"data": RGB_ROWS, b"labels": [0, 1]}, {b"other": []}, "batches.meta has no label_names"),
        (
            {b"data": RGB_ROWS, b"labels": [0, 1]},
            {b"label_names": [b"plane", b"\xff"]},
            "label_names entry 1 (b'\\xff') is not UTF-8",
        ),
        ({b"data": RGB_ROWS, b"labels": [0, 1]}, {b"label_names": 5}, "label_names is not a list of names"),
    ],
)
def test_a_malformed_cifar_batch_is_a_one_line_error(tmp_path, batch, meta, expect):
    with pytest.raises(UserError) as caught:
        load_dataset(str(cifar_folder(tmp_path, batch, meta)), split="test")
    assert expect in str(caught.value) and "\n" not in str(caught.value), str(caught.value)
