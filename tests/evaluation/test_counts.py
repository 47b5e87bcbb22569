"""Rates are counted, then divided in Python: 23 of 24 is exactly 23/24, and the counts sit beside the rates."""

from __future__ import annotations

import json

import torch
from torch import nn

from hardenctl.data import ArrayDataset
from hardenctl.evaluation import EvalConfig, evaluate

CENTRES = torch.tensor([1 / 6, 3 / 6, 5 / 6])  # one grey level per class, 1/3 apart: an ε of 0.01 moves no prediction


class NearestGrey(nn.Module):
    """Predicts the class whose grey level is nearest the image's mean: robust to small ε by construction."""

    def __init__(self, noise: float = 0.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(100.0))
        self.noise = noise

    def forward(self, x):
        mean = x.flatten(1).mean(dim=1, keepdim=True)
        if self.noise:  # a randomised defence: some draws of an ambiguous image go either way
            mean = mean + self.noise * torch.randn_like(mean)
        return -self.scale * (mean - CENTRES.to(x)) ** 2


def grey_images(labels: list[int], shown: list[int]) -> ArrayDataset:
    """Images whose grey level is class ``shown[i]``'s, labelled ``labels[i]``."""
    x = CENTRES[torch.tensor(shown)].view(-1, 1, 1, 1).expand(-1, 1, 4, 4).contiguous()
    return ArrayDataset(x, torch.tensor(labels), ["dark", "mid", "light"], "synthetic")


def test_23_of_24_is_exactly_23_over_24_with_the_counts_beside_it():
    labels = [i % 3 for i in range(24)]
    shown = list(labels)
    shown[5] = (labels[5] + 1) % 3  # one image shows another class: 23 of 24 correct, clean and robust
    config = EvalConfig(n=24, batch_size=8, eps=0.01, attacks=["fgsm", "pgd"], large_eps_samples=0)
    report = evaluate(NearestGrey(), grey_images(labels, shown), config)
    saved = json.loads(report.to_json())
    assert saved["clean_accuracy"] == 23 / 24 and saved["robust_accuracy"] == 23 / 24  # not 0.9583333134651184
    assert saved["attacks"] == {"fgsm": 23 / 24, "pgd": 23 / 24}
    assert saved["counts"] == {"n": 24, "clean_correct": 23, "robust_correct": 23, "attacks": {"fgsm": 23, "pgd": 23}}
    assert isinstance(saved["counts"]["clean_correct"], int)
    wrong = str(labels[5])
    assert saved["per_class"][wrong]["clean_correct"] == saved["per_class"][wrong]["robust_correct"] == 7
    assert (
        saved["per_class"][wrong]["clean_accuracy"] == 7 / 8
        and saved["per_class"]["0" if wrong != "0" else "1"]["robust_accuracy"] == 1.0
    )


def test_a_randomised_models_clean_count_is_a_sum_of_fractions_of_draws():
    """EOT over 3 draws: a sample right on 2 of 3 draws counts 2/3; the count is summed from whole draws."""
    labels = [0, 1, 2] * 4
    x = grey_images(labels, labels).x.clone()
    x[:6] = 1 / 3  # halfway between dark and mid: each draw of the noise decides
    data = ArrayDataset(x, torch.tensor(labels), ["dark", "mid", "light"], "synthetic")
    config = EvalConfig(n=12, batch_size=4, eps=0.01, attacks=["fgsm"], eot_samples=3, large_eps_samples=0)
    report = evaluate(NearestGrey(noise=0.02), data, config)
    assert report.randomized and report.eot_samples == 3
    hits = [round(v * 3) for v in report.samples.clean_correct]
    assert report.counts["clean_correct"] == sum(hits) / 3 and report.clean_accuracy == (sum(hits) / 3) / 12
    assert 0 < sum(hits) < 36 and any(h in (1, 2) for h in hits)  # some samples were right on some draws only
    assert (
        report.counts["robust_correct"] == sum(report.samples.robust)
        and report.robust_accuracy == sum(report.samples.robust) / 12
    )
