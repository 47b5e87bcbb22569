"""Per-image random streams (``--sequential``): an image's draws depend on the seed, its index and how many draws it
has had, never on which images share its batch."""

from __future__ import annotations

import torch

from hardenctl.attacks.streams import SampleStreams


def test_an_images_draws_do_not_depend_on_its_batch():
    alone = SampleStreams(7, torch.tensor([42])).uniform((3, 4, 4))
    together = SampleStreams(7, torch.tensor([5, 42, 9])).uniform((3, 4, 4))
    assert torch.equal(alone[0], together[1])
    assert not torch.equal(together[0], together[1])


def test_a_subset_advances_only_its_own_streams():
    streams = SampleStreams(0, torch.tensor([10, 11, 12]))
    first = streams.uniform((5,))
    streams.rows(torch.tensor([1])).uniform((5,))  # image 11 draws once more (an attack's active subset)
    second = streams.uniform((5,))
    fresh = SampleStreams(0, torch.tensor([10, 12]))
    fresh.uniform((5,))
    assert torch.equal(
        second[[0, 2]], fresh.uniform((5,))
    )  # 10 and 12: their second draws, unaffected by 11's extra one
    assert not torch.equal(first, second)


def test_the_seed_changes_every_stream():
    assert not torch.equal(
        SampleStreams(0, torch.arange(4)).uniform((8,)), SampleStreams(1, torch.arange(4)).uniform((8,))
    )


def test_the_numbers_look_uniform_and_normal():
    streams = SampleStreams(3, torch.arange(64))
    u = streams.uniform((1000,))
    assert 0 <= float(u.min()) and float(u.max()) < 1 and abs(float(u.mean()) - 0.5) < 0.01
    assert abs(float(u.std()) - (1 / 12) ** 0.5) < 0.01
    z = streams.normal((1000,))
    assert abs(float(z.mean())) < 0.02 and abs(float(z.std()) - 1) < 0.02
    k = streams.integers(7, (100,))
    assert int(k.min()) == 0 and int(k.max()) == 6 and k.shape == (64, 100)
