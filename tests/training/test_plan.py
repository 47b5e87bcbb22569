"""The fixed facts of a run's epochs (:mod:`hardenctl.training.plan`): what the plan takes from the model and the
options, and the per-epoch image order every process and a resumed run agree on."""

from __future__ import annotations

import contextlib

import pytest
import torch

from hardenctl.data import load_dataset
from hardenctl.errors import UserError
from hardenctl.models import load_model
from hardenctl.recipes import load_recipe
from hardenctl.training import Distributed, EpochPlan, HardenOptions, RunContext
from hardenctl.training.plan import epoch_order


def test_each_epoch_has_its_own_order_and_the_processes_share_it_out(tmp_path):
    data = load_dataset("digits-train").head(100)
    options = HardenOptions(out_dir=tmp_path, seed=3)
    plan = EpochPlan(data, 10, 10, None, 1)
    alone = RunContext(options, Distributed(), plan)
    first, second = epoch_order(alone, 0), epoch_order(alone, 1)
    assert sorted(first.tolist()) == list(range(100)) and not torch.equal(first, second)
    assert torch.equal(epoch_order(alone, 1), second)  # drawn from (seed, epoch) alone: a resumed run repeats it
    ranks = [epoch_order(RunContext(options, Distributed(rank, 2), plan), 1) for rank in (0, 1)]
    assert torch.equal(torch.stack(ranks, 1).flatten(), second)  # rank r takes positions r::2 of the one order


def test_the_plan_takes_device_batching_and_precision_from_the_model_and_the_options(tmp_path, digits_model_path):
    model = load_model(digits_model_path)
    config = load_recipe("pgd-at", {"batch_size": 64}).config
    data = load_dataset("digits-train").head(300)
    options = HardenOptions(out_dir=tmp_path, device="cpu", amp="off", channels_last=True)
    run = RunContext.for_model(model, config, data, options, Distributed(0, 2))
    plan = run.plan
    assert (plan.local_batch, plan.steps, plan.channels) == (32, 4, 1)  # 300 // 64 global batches of 2 × 32
    assert plan.data_config is model.info.data_config and plan.device == torch.device("cpu")
    assert plan.memory_format == torch.channels_last and plan.amp_dtype is None
    assert isinstance(plan.autocast(), contextlib.nullcontext)  # full precision: nothing to autocast
    with pytest.raises(UserError, match="needs a CUDA device"):
        RunContext.for_model(model, config, data, HardenOptions(out_dir=tmp_path, amp="bf16"), Distributed())
