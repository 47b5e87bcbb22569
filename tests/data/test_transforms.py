"""timm's eval and train transforms, from a model's DataConfig, on [0, 1] pixels; seeded training samples."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from photo_helpers import pattern
from PIL import Image

from hardenctl.data import TrainDataset, choose_augmentation, eval_transform, load_dataset, seeded, train_transform
from hardenctl.models.data_config import DataConfig


def timm_eval(size, crop_pct, interpolation="bilinear", crop_mode="center"):
    from timm.data import create_transform

    return create_transform(
        size,
        is_training=False,
        interpolation=interpolation,
        crop_pct=crop_pct,
        crop_mode=crop_mode,
        mean=(0, 0, 0),
        std=(1, 1, 1),
    )


@pytest.fixture
def photo():
    return Image.fromarray(pattern(np.random.default_rng(0), 45, 61))


@pytest.fixture
def exact():
    """An image already at the 32×32 input size."""
    return Image.fromarray(pattern(np.random.default_rng(1), 32, 32))


def test_undeclared_crop_resizes_and_crops_even_an_image_at_the_input_size(exact, photo):
    """As timm's validate.py does: a photo that happens to have the input size is still zoomed and cropped (the
    arrays' "used as is" convention lives in prepare_arrays, tested in test_arrays.py)."""
    config = DataConfig(input_size=(32, 32))
    out = eval_transform(config, 3)(exact)
    assert torch.equal(out, timm_eval((32, 32), 0.875)(exact))
    assert not torch.equal(out, torch.from_numpy(np.array(exact)).permute(2, 0, 1).float() / 255)
    assert torch.equal(eval_transform(config, 3)(photo), timm_eval((32, 32), 0.875)(photo))


def test_undeclared_crop_uses_the_architecture_default_for_other_sizes(photo):
    config = DataConfig(input_size=(32, 40), interpolation="bicubic", default_crop_pct=0.95)
    assert torch.equal(eval_transform(config, 3)(photo), timm_eval((32, 40), 0.95, "bicubic")(photo))
    assert not torch.equal(eval_transform(config, 3)(photo), timm_eval((32, 40), 0.875, "bicubic")(photo))


@pytest.mark.parametrize("crop_mode", ["center", "squash"])
def test_declared_crop_always_goes_through_timm(exact, photo, crop_mode):
    config = DataConfig(input_size=(32, 32), crop_pct=0.8, interpolation="bicubic", crop_mode=crop_mode)
    reference = timm_eval((32, 32), 0.8, "bicubic", crop_mode)
    for image in (exact, photo):
        assert torch.equal(eval_transform(config, 3)(image), reference(image))
    as_bytes = eval_transform(config, 3, torch.uint8)(photo)
    assert as_bytes.dtype == torch.uint8 and torch.equal(as_bytes.float() / 255, reference(photo))


def test_train_transform_is_timm_s_under_the_same_seed(photo):
    from timm.data import create_transform

    config = DataConfig(input_size=(24, 24), interpolation="bicubic")
    ours = train_transform(config, 3, scale=(0.3, 1.0), hflip=0.5)
    theirs = create_transform(
        (24, 24),
        is_training=True,
        scale=(0.3, 1.0),
        hflip=0.5,
        interpolation="bicubic",
        color_jitter=None,
        mean=(0, 0, 0),
        std=(1, 1, 1),
    )
    outputs = []
    for seed in range(4):
        with seeded(seed):
            mine = ours(photo)
        with seeded(seed):
            assert torch.equal(mine, theirs(photo))
        outputs.append(mine)
    assert mine.shape == (3, 24, 24) and not torch.equal(outputs[0], outputs[1])


def test_seeded_restores_the_caller_s_random_streams():
    random.seed(5), np.random.seed(5), torch.manual_seed(5)
    expected = random.random(), np.random.rand(), torch.rand(1)
    random.seed(5), np.random.seed(5), torch.manual_seed(5)
    with seeded(123):
        random.random(), np.random.rand(), torch.rand(3)
    assert (random.random(), np.random.rand()) == expected[:2] and torch.equal(torch.rand(1), expected[2])
    with seeded(123):
        first = random.random(), np.random.rand(), torch.rand(2)
    with seeded(123):
        again = random.random(), np.random.rand(), torch.rand(2)
    assert first[:2] == again[:2] and torch.equal(first[2], again[2])  # the seed, not the caller's state, decides


@pytest.fixture
def train_set(make_photos):
    root = make_photos({"a": 4, "b": 4, "c": 4})
    source = load_dataset(str(root), data_config=DataConfig(input_size=(24, 24)), workers=0)
    return TrainDataset(
        source, train_transform(DataConfig(input_size=(24, 24)), 3, auto_augment="rand-m9-mstd0.5"), seed=7
    )


def test_augmentation_is_a_function_of_seed_epoch_and_index(train_set):
    """The epoch's batches are harden's (tests/training/test_batches.py): here, one sample at a time."""
    first = train_set[(0, 5)][0]
    assert (
        torch.equal(first, train_set[(0, 5)][0]) and first.shape == (3, 24, 24) and 0 <= first.min() <= first.max() <= 1
    )
    assert not torch.equal(first, train_set[(1, 5)][0])  # another epoch, another draw
    assert not torch.equal(
        first, TrainDataset(train_set.source, train_set.transform, seed=8)[(0, 5)][0]
    )  # another seed
    train_set.epoch = 1
    assert torch.equal(train_set[5][0], train_set[(1, 5)][0])  # a bare index is taken at the dataset's epoch


def test_auto_augmentation_choice_follows_the_input_size():
    assert choose_augmentation(DataConfig(input_size=(32, 32))) == "crop-flip"
    assert choose_augmentation(DataConfig(input_size=(64, 64))) == "timm"
    assert choose_augmentation(DataConfig(input_size=(224, 48))) == "crop-flip"
