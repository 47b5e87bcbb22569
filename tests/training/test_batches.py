"""The training batches ``harden`` really uses (:func:`hardenctl.training.batches.epoch_batches`) on streamed photos:
each sample's augmentation is a function of (seed, epoch, index), so workers, a resume and process shards repeat the
one-process epoch exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from hardenctl.data import load_dataset
from hardenctl.models.data_config import DataConfig
from hardenctl.recipes import load_recipe
from hardenctl.training import EpochPlan
from hardenctl.training.batches import augmentation_mode, epoch_batches

DATA_CONFIG = DataConfig(input_size=(24, 24))


@pytest.fixture
def photos(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (30 + i, 40 - i, 3), dtype=np.uint8)).save(
                tmp_path / name / f"{i}.png"
            )
    return load_dataset(str(tmp_path), data_config=DATA_CONFIG, workers=0)


CONFIG = load_recipe("pgd-at", {"augment": "timm", "auto_augment": "rand-m9-mstd0.5", "rrc_scale": [0.3, 1.0]}).config


def epoch(data, order, batch, steps, number, seed=7, workers=0):
    plan = EpochPlan(data, batch, steps, DATA_CONFIG, 3)
    return list(epoch_batches(plan, torch.as_tensor(order), number, CONFIG, seed, workers))


def test_batches_are_augmented_per_sample_from_seed_epoch_and_index(photos):
    order = np.random.default_rng(1).permutation(12)
    serial = epoch(photos, order, 4, 3, 2)
    assert (
        len(serial) == 3
        and serial[0][0].shape == (4, 3, 24, 24)
        and 0 <= float(serial[0][0].min()) <= float(serial[0][0].max()) <= 1
    )
    assert sorted(torch.cat([y for _, y in serial]).tolist()) == [0] * 4 + [1] * 4 + [2] * 4
    parallel = epoch(photos, order, 4, 3, 2, workers=2)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(serial, parallel))
    again = epoch(photos, order, 4, 3, 2)  # a resumed run repeats the epoch from its start
    assert all(torch.equal(a[0], b[0]) for a, b in zip(serial, again))
    assert not torch.equal(serial[0][0], epoch(photos, order, 4, 3, 3)[0][0])  # another epoch, other draws
    assert not torch.equal(serial[0][0], epoch(photos, order, 4, 3, 2, seed=8)[0][0])  # another seed, other draws


def test_process_shards_make_up_the_one_process_epoch(photos):
    """As ``DistributedSampler`` shards an epoch: rank r of 2 takes positions r, r+2, ...; a global batch of 4 is
    the two local batches of 2, interleaved."""
    order = np.random.default_rng(2).permutation(12)
    whole = epoch(photos, order, 4, 3, 0)
    shards = [epoch(photos, order[rank::2], 2, 3, 0) for rank in (0, 1)]
    for step, (x, _) in enumerate(whole):
        merged = torch.stack([shards[i % 2][step][0][i // 2] for i in range(4)])
        assert torch.equal(merged, x)


def test_auto_picks_timm_for_inputs_of_64_px_and_more():
    auto = load_recipe("pgd-at").config
    assert augmentation_mode(auto, DataConfig(input_size=(64, 64))) == "timm"
    assert augmentation_mode(auto, DataConfig(input_size=(32, 32))) == "crop-flip"
    assert augmentation_mode(auto, None) == "crop-flip" and augmentation_mode(CONFIG, None) == "timm"
