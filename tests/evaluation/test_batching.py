"""``--batch-size auto``: what one image costs is measured, the choice fits the memory given, and every process
gets a batch."""

from __future__ import annotations

import torch
from torch import nn

from hardenctl.data import ArrayDataset
from hardenctl.evaluation import EvalConfig, evaluate
from hardenctl.evaluation.batching import ATTACK_COPIES, LARGEST, auto_batch_size, gradient_pass_bytes


class Wide(nn.Module):
    """A conv layer with a 4 MB weight and a known activation: 16 channels × 8 × 8 floats per image."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.fc = nn.Linear(16 * 64, 1000)  # 4 MB of weight that no image adds to

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def test_the_bytes_per_image_do_not_depend_on_the_batch_and_leave_the_weights_out():
    model = Wide().eval()
    per_image = {b: gradient_pass_bytes(model, torch.rand(b, 3, 8, 8)) / b for b in (2, 8)}
    assert per_image[2] == per_image[8]  # weights counted would add 4 MB / b
    activation = 16 * 8 * 8 * 4
    assert activation <= per_image[2] < 8 * activation  # the ReLU output (saved once for conv and fc), input, logits


def test_the_choice_is_the_largest_power_of_two_that_fits_the_share_of_free_memory(monkeypatch):
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    model, probe = Wide().eval(), torch.rand(4, 3, 8, 8)
    per_image = gradient_pass_bytes(model, probe) / 4 + ATTACK_COPIES * 3 * 8 * 8 * 4
    free = int(per_image * 300 / 0.25)  # 300 images fit in a CPU's quarter of it
    size, record = auto_batch_size(model, probe, 10_000, torch.device("cpu"), free=free)
    assert size == 256 and record["fits"] in (299, 300) and record["chosen"] == 256
    assert auto_batch_size(model, probe, 100, torch.device("cpu"), free=free)[0] == 100  # all of the data in one batch
    assert (
        auto_batch_size(model, probe, 100, torch.device("cpu"), world_size=3, free=free)[0] == 34
    )  # a batch per process
    assert auto_batch_size(model, probe, 10**9, torch.device("cpu"), free=10**15)[0] == LARGEST
    assert auto_batch_size(model, probe, 100, torch.device("cpu"), free=1)[0] == 1  # never 0
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # two CPU processes share the machine's memory
    assert auto_batch_size(model, probe, 10_000, torch.device("cpu"), free=free)[0] == 128


def test_evaluate_with_auto_records_the_choice_and_runs_in_that_many_batches():
    torch.manual_seed(0)
    x, y = torch.rand(40, 3, 8, 8), torch.randint(0, 10, (40,))
    data = ArrayDataset(x, y, class_names=[str(k) for k in range(10)], source="random")
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Flatten(), nn.Linear(256, 10)).eval()
    calls: list[int] = []
    model.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[0]))
    report = evaluate(model, data, EvalConfig(attacks=["fgsm"], n=40, batch_size="auto", large_eps_samples=0))
    assert report.execution["batch_size"] == 40 and report.execution["batch_size_auto"]["chosen"] == 40
    assert report.execution["batch_size_auto"]["bytes_per_image"] > 0
    assert max(calls) == 40  # the clean pass saw the whole data at once
    fixed = evaluate(model, data, EvalConfig(attacks=["fgsm"], n=40, batch_size=16, large_eps_samples=0))
    assert fixed.execution["batch_size"] == 16 and fixed.execution["batch_size_auto"] is None
