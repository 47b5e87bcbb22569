"""``--eval-precision bf16``: the attacks search under bf16 autocast, and nothing they act on is a rounding artefact.

The model below is correct in fp32 by a margin that bf16 rounding reverses, so a bf16 search that trusted its own
logits would call every point broken at once (and stop attacking it); the attacks must confirm each "fooled" in fp32.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hardenctl.attacks import APGDCE, APGDT, PGD, Square
from hardenctl.data import ArrayDataset
from hardenctl.evaluation import EvalConfig, evaluate


class RoundingFooled(nn.Module):
    """Class 1 wins in fp32 by 0.05 %, class 0 wins under bf16 autocast: the Linear's weight 0.9985 rounds to 1.0
    in bf16 and its input 1 + 1e-6·mean(x) rounds to exactly 1.0, while class 1's logit stays an fp32 product.
    Records the dtype of every Linear output (bf16: a search pass, fp32: a confirmation or verdict pass)."""

    def __init__(self, classes: int = 4):
        super().__init__()
        self.head = nn.Linear(1, 1, bias=False)
        with torch.no_grad():
            self.head.weight.fill_(0.9985)
        self.classes = classes
        self.dtypes: list[torch.dtype] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = 1 + 1e-6 * x.flatten(1).mean(dim=1, keepdim=True)
        logit0 = self.head(s)
        if bool(s.min() > 0):  # control flow torch.fx cannot trace: evaluations attack this module itself, not a copy
            self.dtypes.append(logit0.dtype)
        logit1 = 0.999 * s
        rest = [s * 0.5 - k for k in range(self.classes - 2)]  # low-ranked classes (APGD-T needs 4 in all)
        return torch.cat([logit0.float(), logit1, *rest], dim=1)


def data(n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    return torch.rand(n, 3, 8, 8), torch.ones(n, dtype=torch.long)


def test_the_model_is_correct_in_fp32_and_fooled_by_bf16_rounding():
    model, (x, y) = RoundingFooled(), data()
    assert (model(x).argmax(1) == y).all()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert (model(x).argmax(1) != y).all()


@pytest.mark.parametrize(
    "make",
    [
        lambda: APGDCE(8 / 255, steps=6),
        lambda: APGDT(8 / 255, steps=4, n_target_classes=2),
        lambda: PGD(8 / 255, steps=4),
        lambda: Square(8 / 255, queries=30),
    ],
    ids=["apgd-ce", "apgd-t", "pgd", "square"],
)
def test_a_bf16_search_confirms_every_fooled_in_fp32_and_keeps_attacking(make):
    model, (x, y) = RoundingFooled(), data()
    attack = make()
    attack.search_dtype = torch.bfloat16
    torch.manual_seed(0)
    x_adv = attack(model, x, y)
    assert torch.bfloat16 in model.dtypes and torch.float32 in model.dtypes  # it searched in bf16 and confirmed in fp32
    assert (model(x_adv).argmax(1) == y).all()  # nothing breaks this model in fp32
    assert attack.work.broken == 0  # and the attack does not claim otherwise
    # it kept working on every point: APGD and PGD to their last step, Square to its last query
    passes = attack.work.backward if not isinstance(attack, Square) else attack.work.forward
    assert passes >= len(x) * 4


def test_fp32_search_runs_no_pass_in_bf16():
    model, (x, y) = RoundingFooled(), data()
    APGDCE(8 / 255, steps=4)(model, x, y)
    assert set(model.dtypes) == {torch.float32}


def test_a_bf16_search_breaks_honest_points_as_fp32_does(model, big_test_data):
    """On an honest model the bf16 search breaks about what the fp32 search breaks, and what it claims holds in fp32."""
    x, y = big_test_data
    wrong = {}
    for dtype in (None, torch.bfloat16):
        attack = APGDCE(0.03, steps=20)
        attack.search_dtype = dtype
        torch.manual_seed(0)
        x_adv = attack(model, x, y)
        with torch.no_grad():
            wrong[dtype] = model(x_adv).argmax(1) != y
        assert 0 < attack.work.broken <= int(wrong[dtype].sum()) < len(x)
    assert abs(int(wrong[torch.bfloat16].sum()) - int(wrong[None].sum())) <= 3, {
        k: int(v.sum()) for k, v in wrong.items()
    }


def test_evaluate_records_the_search_precision_and_its_verdict_is_fp32():
    model, (x, y) = RoundingFooled(), data(8)
    dataset = ArrayDataset(x, y, class_names=[str(k) for k in range(4)], source="rounding")
    config = dict(eps=8 / 255, n=8, batch_size=8, apgd_steps=4, square_queries=20, large_eps_samples=0)
    bf16 = evaluate(model, dataset, EvalConfig(precision="bf16", **config))
    assert torch.bfloat16 in model.dtypes
    model.dtypes.clear()
    fp32 = evaluate(model, dataset, EvalConfig(precision="fp32", **config))
    assert set(model.dtypes) == {torch.float32}
    assert bf16.execution["search_precision"] == "bf16" and bf16.execution["verdict_precision"] == "fp32"
    assert fp32.execution["search_precision"] == "fp32" and fp32.execution["precision_requested"] == "fp32"
    assert bf16.clean_accuracy == fp32.clean_accuracy == 1.0  # a bf16 verdict would say 0
    assert bf16.robust_accuracy == fp32.robust_accuracy == 1.0
    assert evaluate(model, dataset, EvalConfig(**config)).execution["search_precision"] == "fp32"  # auto on a CPU
