"""``evaluating``: the one eval-mode switch of attacks, evaluations and training-time scores."""

from __future__ import annotations

import pytest
from torch import nn

from hardenctl.attacks import evaluating


def test_the_model_is_in_eval_mode_inside_and_back_in_its_mode_after_an_error():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)).train()
    with pytest.raises(RuntimeError):
        with evaluating(model):
            assert not model.training and not model[1].training
            raise RuntimeError("a failed batch")
    assert model.training and model[1].training


def test_a_model_in_eval_mode_stays_there():
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout()).eval()
    with evaluating(model):
        pass
    assert not model.training and not model[1].training
