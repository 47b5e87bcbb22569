"""Class folders and tars, streamed through timm's readers and eval transform."""

from __future__ import annotations

import os
import tarfile

import numpy as np
import pytest
import torch
from photo_helpers import IMAGEWOOF, pattern, save
from PIL import Image

from hardenctl.data import ArrayDataset, Dataset, FolderDataset, load_dataset
from hardenctl.errors import UserError
from hardenctl.models.data_config import DataConfig


def timm_tensors(root, config: DataConfig, mean=(0.0, 0.0, 0.0)) -> dict[str, tuple[torch.Tensor, int]]:
    """Path → (tensor, label) from timm's own ImageDataset and create_transform, mean 0 std 1."""
    from timm.data import ImageDataset as TimmImageDataset
    from timm.data import create_transform

    transform = create_transform(
        config.input_size,
        is_training=False,
        interpolation=config.interpolation,
        crop_pct=config.crop_pct,
        crop_mode=config.crop_mode,
        mean=mean,
        std=(1, 1, 1),
    )
    dataset = TimmImageDataset(str(root), transform=transform)
    return {dataset.filename(i, absolute=True): dataset[i] for i in range(len(dataset))}


def ours(data: FolderDataset, batch_size: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    parts = list(data.batches(batch_size))
    assert [start for start, _, _ in parts] == list(range(0, len(data), batch_size))
    return torch.cat([x for _, x, _ in parts]), torch.cat([y for _, _, y in parts])


@pytest.mark.parametrize(
    "config",
    [
        DataConfig(input_size=(48, 48), interpolation="bicubic", crop_pct=0.875),
        DataConfig(input_size=(40, 56), interpolation="bilinear", crop_pct=0.95, crop_mode="center"),
        DataConfig(input_size=(48, 40), interpolation="bilinear", crop_pct=1.0, crop_mode="squash"),
        DataConfig(
            input_size=(48, 48), interpolation="bicubic", crop_pct=0.9, crop_mode="border", mean=(0.0, 0.0, 0.0)
        ),
    ],
    ids=["center-bicubic", "center-nonsquare", "squash", "border"],
)
def test_eval_pixels_match_timm_image_for_image(make_photos, config):
    root = make_photos({"cat": 4, "dog": 4, "emu": 3})
    data = load_dataset(str(root), data_config=config, workers=0)
    x, y = ours(data)
    reference = timm_tensors(root, config)
    assert x.shape == (11, 3, *config.input_size) and len(reference) == 11
    for file, image, label in zip(data.filenames, x, y):
        expected, expected_label = reference[file]
        assert torch.equal(image, expected), file
        assert int(label) == expected_label


def test_order_is_class_interleaved_and_n_reads_only_the_first(make_photos):
    root = make_photos({"a": 3, "b": 1, "c": 2})
    (root / "a" / "img02.png").write_bytes(b"not a png")  # 3rd image of class a: position 5, beyond --n 4
    config = DataConfig(input_size=(32, 32))
    data = load_dataset(str(root), n=4, data_config=config, workers=0)
    assert data.class_names == ["a", "b", "c"] and data.y.tolist() == [0, 1, 2, 0] and data.names_known
    assert [os.path.basename(f) for f in data.filenames] == ["img00.jpg", "img00.jpg", "img00.jpg", "img01.jpg"]
    assert ours(data)[0].shape == (4, 3, 32, 32)
    full = load_dataset(str(root), data_config=config, workers=0)
    assert full.y.tolist() == [0, 1, 2, 0, 2, 0]  # labels from file names alone: the corrupt file is not opened


def test_tar_of_class_folders_gives_the_folder_s_samples(make_photos, tmp_path):
    root = make_photos({"cat": 3, "dog": 2})
    with tarfile.open(tmp_path / "photos.tar", "w") as archive:
        archive.add(root / "cat", arcname="cat")
        archive.add(root / "dog", arcname="dog")
    config = DataConfig(input_size=(40, 40), crop_pct=0.875)
    folder = load_dataset(str(root), data_config=config, workers=0)
    tar = load_dataset(str(tmp_path / "photos.tar"), data_config=config, workers=2)
    tar.pixels(0, 1)  # opens the tar in this process first: forked workers must not share its file offset
    assert tar.class_names == folder.class_names and torch.equal(tar.y, folder.y)
    assert torch.equal(ours(tar)[0], ours(folder)[0]) and tar.sha256() == folder.sha256()
    assert tar.filenames[0] == f"{tmp_path / 'photos.tar'}:cat/img00.jpg"


def test_a_tar_is_read_as_timm_reads_it(make_photos, tmp_path):
    """timm's own tar reader, built through its constructor: the images timm takes from a tar (its suffixes, .bmp
    not among them), in timm's order, and a tar holding none of those is a one-line error before any decoding."""
    from timm.data import create_dataset

    root = make_photos({"cat": 2, "dog": 2})
    Image.fromarray(pattern(np.random.default_rng(5), 20, 20)).save(root / "dog" / "extra.bmp")
    with tarfile.open(tmp_path / "photos.tar", "w") as archive:
        archive.add(root / "cat", arcname="cat")
        archive.add(root / "dog", arcname="dog")
    tar = load_dataset(str(tmp_path / "photos.tar"), data_config=DataConfig(input_size=(32, 32)), workers=0)
    reference = create_dataset("", root=str(tmp_path / "photos.tar"))
    names = [f"{tmp_path / 'photos.tar'}:{reference.filename(i)}" for i in range(len(reference))]
    assert len(tar) == len(reference) == 4 and sorted(tar.filenames) == sorted(names)
    assert not any(name.endswith(".bmp") for name in tar.filenames)
    with tarfile.open(tmp_path / "bmp.tar", "w") as archive:
        archive.add(root / "dog" / "extra.bmp", arcname="dog/extra.bmp")
    with pytest.raises(UserError, match="no images found .*what timm reads from tars"):
        load_dataset(str(tmp_path / "bmp.tar"), data_config=DataConfig(input_size=(32, 32)), workers=0)


def test_photos_are_read_as_grey_or_rgb_only(make_photos):
    data = load_dataset(str(make_photos({"a": 1, "b": 1})), data_config=DataConfig(input_size=(32, 32)), workers=0)
    for attempt in (lambda: data.with_channels(2), lambda: load_dataset(str(data.source), in_chans=4, workers=0)):
        with pytest.raises(
            UserError, match="the model has [24] channels; images can be read and transformed as 1 .grey. or 3"
        ):
            attempt()


def test_corrupt_image_is_one_line_error_naming_the_file(make_photos):
    root = make_photos({"a": 2, "b": 2})
    bad = root / "b" / "img01.jpg"
    bad.write_bytes(bad.read_bytes()[:200])  # truncated: the header reads, the pixels do not
    data = load_dataset(str(root), data_config=DataConfig(input_size=(32, 32)), workers=2)
    with pytest.raises(UserError) as err:
        list(data.batches(2))
    assert str(bad) in str(err.value) and "\n" not in str(err.value) and "--skip-unreadable" in str(err.value)


def test_skip_unreadable_drops_and_counts(make_photos):
    root = make_photos({"a": 3, "b": 3})
    (root / "a" / "img00.jpg").write_bytes(b"\xff\xd8 garbage")
    (root / "b" / "img02.png").write_bytes(b"")
    data = load_dataset(str(root), data_config=DataConfig(input_size=(32, 32)), skip_unreadable=True, n=4, workers=0)
    assert len(data) == 4 and data.skipped == 1  # the second bad file lies beyond the 4 readable ones needed
    assert data.y.tolist() == [1, 0, 1, 0] and "skipped 1 unreadable image" in data.notes[0]
    everything = load_dataset(str(root), data_config=DataConfig(input_size=(32, 32)), skip_unreadable=True, workers=2)
    assert len(everything) == 4 and everything.skipped == 2 and len(ours(everything)[0]) == 4


def test_empty_class_folder_is_named(make_photos, tmp_path):
    root = make_photos({"a": 2, "b": 2})
    (root / "zebra").mkdir()
    (root / "zebra" / "notes.txt").write_text("no photos yet")
    with pytest.raises(UserError, match="zebra"):
        load_dataset(str(root), data_config=DataConfig(input_size=(32, 32)))
    with tarfile.open(tmp_path / "p.tar", "w") as archive:
        archive.add(root, arcname=".")
    with pytest.raises(UserError, match="zebra"):
        load_dataset(str(tmp_path / "p.tar"), data_config=DataConfig(input_size=(32, 32)))


def test_a_folder_above_the_splits_is_refused(make_photos, tmp_path):
    make_photos({"cat": 1, "dog": 1}, root=tmp_path / "set" / "train")
    make_photos({"cat": 1, "dog": 1}, root=tmp_path / "set" / "val")
    with pytest.raises(UserError, match="class folder cat twice"):  # timm would merge train/cat and val/cat
        load_dataset(str(tmp_path / "set"), data_config=DataConfig(input_size=(32, 32)))


def test_non_image_files_are_ignored(make_photos):
    root = make_photos({"a": 2, "b": 2})
    (root / "a" / "README.txt").write_text("about these photos")
    (root / "b" / "labels.csv").write_text("x,y")
    (root / "classes.json").write_text("{}")
    (root / ".cache").mkdir()
    data = load_dataset(str(root), data_config=DataConfig(input_size=(32, 32)), workers=0)
    assert len(data) == 4 and data.class_names == ["a", "b"]


def test_worker_counts_give_identical_batches_and_digest(make_photos):
    root = make_photos({"a": 5, "b": 4, "c": 4})
    config = DataConfig(input_size=(36, 36), interpolation="bicubic", crop_pct=0.9)
    serial = load_dataset(str(root), data_config=config, workers=0)
    parallel = load_dataset(str(root), data_config=config, workers=2)
    digest_before_pass = parallel.sha256()  # no pass yet: it streams one of its own
    x0, y0 = ours(serial, 3)
    x2, y2 = ours(parallel, 3)
    assert torch.equal(x0, x2) and torch.equal(y0, y2)
    assert serial.sha256() == digest_before_pass == parallel.sha256()
    in_memory = ArrayDataset(x0.mul(255).round().to(torch.uint8), y0, serial.class_names, "same pixels")
    assert in_memory.sha256() == serial.sha256()  # exactly the pixels and labels evaluated


def test_take_and_head_select_samples(make_photos):
    data = load_dataset(str(make_photos({"a": 3, "b": 3})), data_config=DataConfig(input_size=(32, 32)), workers=0)
    x, y = ours(data)
    picked = data.take(torch.tensor([4, 1]))
    assert torch.equal(picked.pixels(0, 2), x[[4, 1]]) and picked.y.tolist() == y[[4, 1]].tolist()
    first = data.head(2)
    assert len(first) == 2 and first.sha256() == ArrayDataset((x[:2] * 255).round().byte(), y[:2], [], "").sha256()
    with pytest.raises(UserError, match="--n"):
        data.head(0)


def test_digest_changes_with_one_pixel(make_photos):
    root = make_photos({"a": 3, "b": 3}, sizes=[(32, 32)])  # at the input size (still resized and cropped)
    config = DataConfig(input_size=(32, 32))
    before = load_dataset(str(root), data_config=config, workers=0).sha256()
    png = root / "b" / "img02.png"
    array = np.array(Image.open(png))
    array[5, 7, 1] ^= 1
    save(png, array)
    assert load_dataset(str(root), data_config=config, workers=0).sha256() != before


def test_greyscale_photos_become_rgb_or_stay_grey(make_photos):
    root = make_photos({"a": 2, "b": 2})  # img01 of each class (positions 2, 3) is a greyscale JPEG
    config = DataConfig(input_size=(32, 32), crop_pct=1.0)
    rgb = load_dataset(str(root), data_config=config, workers=0)
    x = rgb.pixels(2, 4)
    assert rgb.channels == 3 and x.shape == (2, 3, 32, 32)
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 1], x[:, 2])
    grey = rgb.with_channels(1)
    assert grey.channels == 1 and torch.equal(grey.pixels(2, 4), x[:, :1])
    assert load_dataset(str(root), data_config=config, in_chans=1, workers=0).pixels(0, 4).shape == (4, 1, 32, 32)


def test_undeclared_size_uses_the_folder_s_own(tmp_path, make_photos):
    rng = np.random.default_rng(1)
    arrays = [pattern(rng, 20, 24) for _ in range(4)]
    for i, array in enumerate(arrays):
        save(tmp_path / "same" / f"c{i % 2}" / f"{i}.png", array)
    data = load_dataset(str(tmp_path / "same"), workers=0)
    assert data.image_size == (20, 24) and data.config.sources["input_size"] == "data"
    reference = timm_tensors(tmp_path / "same", DataConfig(input_size=(20, 24), crop_pct=0.875))
    assert torch.equal(
        data.pixels(0, 4), torch.stack([reference[f][0] for f in data.filenames])
    )  # resized and cropped too
    partial = load_dataset(
        str(tmp_path / "same"), data_config=DataConfig(interpolation="bicubic", crop_pct=0.9), workers=0
    )
    assert partial.image_size == (20, 24) and partial.config.interpolation == "bicubic"  # a config without a size
    with pytest.raises(UserError, match="--input-size"):
        load_dataset(str(make_photos({"a": 2, "b": 2})))


def test_photos_at_the_input_size_get_timm_s_eval_transform_but_arrays_pass(tmp_path):
    """timm's validate.py resizes and crops every photo, also one that already has the input size; an array (CIFAR,
    npz: every image one size) at the input size with no crop declared is used as it is (RobustBench's convention)."""
    rng = np.random.default_rng(2)
    arrays = [pattern(rng, 32, 32) for _ in range(4)]
    for i, array in enumerate(arrays):
        save(tmp_path / "photos" / f"c{i % 2}" / f"{i // 2}.png", array)
    np.savez(tmp_path / "same.npz", x=np.stack(arrays), y=np.array([0, 1, 0, 1]))
    config = DataConfig(input_size=(32, 32), interpolation="bicubic", default_crop_pct=0.95)  # crop_pct undeclared
    folder = load_dataset(str(tmp_path / "photos"), data_config=config, workers=0)
    reference = timm_tensors(
        tmp_path / "photos", DataConfig(input_size=(32, 32), interpolation="bicubic", crop_pct=0.95)
    )
    assert torch.equal(folder.pixels(0, 4), torch.stack([reference[f][0] for f in folder.filenames]))
    in_memory = load_dataset(str(tmp_path / "same.npz"), data_config=config)
    as_stored = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
    assert torch.equal(in_memory.x, as_stored) and not torch.equal(folder.pixels(0, 4), in_memory.pixels(0, 4))


def test_streaming_dataset_satisfies_what_evaluate_uses(make_photos):
    import timm

    from hardenctl.evaluation import EvalConfig, evaluate
    from hardenctl.models import wrap_model

    data = load_dataset(str(make_photos({"a": 4, "b": 4})), data_config=DataConfig(input_size=(32, 32)), workers=0)
    assert isinstance(data, Dataset) and isinstance(data.head(3), Dataset)
    torch.manual_seed(0)
    model = wrap_model(
        timm.create_model("test_resnet", num_classes=2), "test_resnet", 2, (0.5,) * 3, (0.5,) * 3, input_size=(32, 32)
    )
    report = evaluate(model, data, EvalConfig(attacks=["fgsm"], eps=2 / 255, n=6, batch_size=4, large_eps_samples=0))
    assert report.n == 6 and report.data_sha256 == data.head(6).sha256()
    assert report.data["image_size"] == [32, 32] and report.data["notes"] == data.notes
    assert {c.name: c.passed for c in report.checks}["perturbations_in_bounds"]  # batches were [0, 1] pixels


@pytest.mark.skipif(not IMAGEWOOF.is_dir(), reason="../shared/data/imagewoof absent")
def test_imagewoof_val_prefix_matches_timm():
    config = DataConfig(input_size=(64, 64), interpolation="bicubic", crop_pct=0.875)
    data = load_dataset(str(IMAGEWOOF / "val"), n=20, data_config=config, workers=0)
    assert data.y.tolist() == list(range(10)) * 2 and data.class_names[0] == "n02086240"
    x, _ = ours(data, 10)
    from timm.data import create_transform

    transform = create_transform((64, 64), interpolation="bicubic", crop_pct=0.875, mean=(0, 0, 0), std=(1, 1, 1))
    for file, image in zip(data.filenames, x):
        with Image.open(file) as photo:
            assert torch.equal(image, transform(photo.convert("RGB"))), file


def test_old_size_argument_squashes_mixed_sizes(tmp_path):
    save(tmp_path / "a" / "0.png", np.zeros((4, 4, 3), np.uint8))
    save(tmp_path / "a" / "1.png", np.zeros((6, 6, 3), np.uint8))
    with pytest.raises(UserError, match="--resize"):
        load_dataset(str(tmp_path))
    data = load_dataset(str(tmp_path), size=(5, 5), workers=0)
    assert data.image_size == (5, 5) and data.pixels(0, 2).shape == (2, 3, 5, 5)


def test_a_classes_json_beside_the_folders_names_the_classes_for_people_and_the_ids_stay(make_photos, tmp_path):
    import json

    import timm

    from hardenctl.evaluation import EvalConfig, evaluate
    from hardenctl.models import wrap_model
    from hardenctl.report import render_markdown

    root = tmp_path / "woof"
    make_photos({"n02111889": 3, "n02115641": 3}, root=root / "val")
    (root / "classes.json").write_text(
        json.dumps({"wnid_to_name": {"n02111889": "Samoyed", "n02115641": "dingo | wild"}})
    )
    data = load_dataset(str(root / "val"), data_config=DataConfig(input_size=(32, 32)), workers=0)
    assert data.class_names == ["n02111889", "n02115641"] and data.display_names == ["Samoyed", "dingo | wild"]
    torch.manual_seed(0)
    model = wrap_model(
        timm.create_model("test_resnet", num_classes=2), "test_resnet", 2, (0.5,) * 3, (0.5,) * 3, input_size=(32, 32)
    )
    report = evaluate(model, data, EvalConfig(attacks=["fgsm"], eps=2 / 255, n=6, batch_size=4, large_eps_samples=0))
    assert report.per_class["0"]["name"] == "n02111889" and report.per_class["0"]["display_name"] == "Samoyed"
    assert report.pictures.class_names == ["Samoyed", "dingo | wild"]
    markdown = render_markdown(report)
    assert "| 0 Samoyed (n02111889) |" in markdown and "1 dingo \\| wild (n02115641)" in markdown
    assert (
        load_dataset(str(make_photos({"a": 2, "b": 2})), data_config=DataConfig(input_size=(32, 32))).display_names
        is None
    )


@pytest.mark.parametrize(
    "content,expect",
    [
        ('{"wnid_to_name": {"a": "Apple", "b": "Banana"}, "imagenet1k_index": {"a": 1}}', ["Apple", "Banana"]),
        ('{"a": "Apple"}', ["Apple", "b"]),  # a folder it does not name keeps its id
        ('["Apple", "Banana"]', ["Apple", "Banana"]),  # one name per folder, in sorted order
        ('{"classes": ["Apple", "Banana"], "label_to_name": {"0": "Apple"}}', ["Apple", "Banana"]),
        ('{"x": "Xylophone"}', None),  # names none of the folders: another set's file
        ('["a", "b"]', None),  # the ids themselves: nothing to show
        ('{"wnid_to_name": {"a": "猫", "b": "犬"}}', ["猫", "犬"]),
    ],
)
def test_classes_json_forms_for_folders(make_photos, tmp_path, content, expect):
    root = make_photos({"a": 1, "b": 1})
    (root / "classes.json").write_text(content, encoding="utf-8")
    assert load_dataset(str(root), data_config=DataConfig(input_size=(32, 32)), workers=0).display_names == expect


@pytest.mark.parametrize(
    "content,expect",
    [
        (b'{"wnid_to_name": {"a": "\xe9t\xe9"}}', "is not UTF-8 text (byte 0xe9 at offset 24)"),
        (
            b'{"wnid_to_name": {"a": "Apple"',
            "is not valid JSON (Expecting ',' delimiter at line 1 column 31, where the file ends",
        ),
        pytest.param(b"[" * 50_000, "nested too deeply", id="50000 brackets"),
        (b'{"wnid_to_name": {"a": 1, "b": "Banana"}}', "the name of 'a' (1) is not a string"),
        (b'{"wnid_to_name": "a=Apple"}', "'wnid_to_name' is 'a=Apple', not an object of ids to names"),
        (b'{"a": ["Apple"]}', "the name of 'a' (a list of 1 item) is not a string"),
        (b'["Apple"]', "lists 1 name but"),
        (b'["Apple", "Banana", "Cherry"]', "lists 3 names but"),
        (b"true", "holds True, not a list of class names nor an object"),
        (b'{"a": "Ap\\u0007ple"}', "holds the character '\\x07'"),
    ],
)
def test_a_bad_classes_json_beside_folders_is_a_one_line_error(make_photos, tmp_path, content, expect):
    """Non-UTF-8 or deeply nested files crashed (exit 3); truncated ones and wrong types were ignored without a word."""
    root = tmp_path / "set"
    make_photos({"a": 1, "b": 1}, root=root / "val")
    (root / "classes.json").write_bytes(content)
    with pytest.raises(UserError) as caught:
        load_dataset(str(root / "val"), data_config=DataConfig(input_size=(32, 32)), workers=0)
    message = str(caught.value)
    assert "\n" not in message and str(root / "classes.json") in message and expect in message, message


def test_cli_a_truncated_classes_json_is_exit_2_and_writes_nothing(cli, make_photos, tmp_path, digits_model_path):
    root = make_photos({"a": 2, "b": 2})
    (root / "classes.json").write_text('{"wnid_to_name": {"a": "Apple", "b": "Ban')
    out = tmp_path / "out"
    code, _, err = cli(
        "eval",
        digits_model_path,
        "--data",
        root,
        "--n",
        "4",
        "--attacks",
        "fgsm",
        "--input-size",
        "8,8",
        "--quiet",
        "--report",
        out / "report.json",
    )
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
    assert "classes.json is not valid JSON" in err, err
    assert not out.exists()
