"""Speed at equal strength: the work accounting, dropping fooled points inside APGD, and the
BN-folded inference copy. Every speed-up must break at least the points the plain attack
breaks on the same seed, and must do less counted work."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from hardenctl.attacks import APGDCE, APGDT, PGD, Square, build_attack
from hardenctl.attacks.inference import GradOrFrozen, inference_copy
from hardenctl.attacks.suites import build_custom, build_suite


class CountingModel(nn.Module):
    """Records the batch size of every forward pass."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner, self.batch_sizes = inner, []

    def forward(self, x):
        self.batch_sizes.append(x.shape[0])
        return self.inner(x)


def _run(attack, model, x, y, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(adversarial points, which of them the model misclassifies), on a fixed seed."""
    torch.manual_seed(seed)
    x_adv = attack(model, x, y)
    with torch.no_grad():
        return x_adv, model(x_adv).argmax(1) != y


def _correct(model, data):
    x, y = data
    with torch.no_grad():
        right = model(x).argmax(1) == y
    return x[right], y[right]


ATTACKS = {
    "apgd-ce": lambda eps: APGDCE(eps, steps=20),
    "apgd-t": lambda eps: APGDT(eps, steps=10, n_target_classes=3),
    "apgd-dlr-l2": lambda eps: APGDCE(eps * 10, "l2", steps=20, loss="dlr"),
}


@pytest.mark.parametrize("name", list(ATTACKS))
@pytest.mark.parametrize("seed", [0, 1])
def test_dropping_fooled_points_inside_apgd_breaks_the_same_points_with_less_work(model, big_test_data, name, seed):
    x, y = _correct(model, big_test_data)
    plain, dropping = ATTACKS[name](0.03), ATTACKS[name](0.03)
    plain.drop_fooled = False
    adv_plain, broken_plain = _run(plain, model, x, y, seed)
    adv_dropping, broken_dropping = _run(dropping, model, x, y, seed)
    assert 0 < broken_plain.sum() < len(x)  # neither vacuous nor saturated
    assert (broken_dropping | ~broken_plain).all()  # every point the plain run breaks is broken
    # Each point's path depends on that point alone, so dropping others changes no point's path.
    assert torch.allclose(adv_dropping, adv_plain, atol=1e-6)
    assert dropping.work.backward < plain.work.backward
    assert dropping.work.broken == int(broken_dropping.sum()) and plain.work.broken == int(broken_plain.sum())
    assert dropping.work.attacked == plain.work.attacked == len(x)


def test_a_fooled_point_is_never_attacked_again_inside_an_apgd_run(model, big_test_data):
    x, y = _correct(model, big_test_data)
    counted = CountingModel(model).eval()
    attack = APGDCE(0.03, steps=20)
    torch.manual_seed(0)
    attack(counted, x, y)
    sizes = counted.batch_sizes[1:]  # after the clean pass: one pass per iterate
    assert sizes == sorted(sizes, reverse=True) and sizes[-1] < sizes[0]
    assert attack.work.forward == sum(counted.batch_sizes) and attack.work.backward == sum(sizes)


@pytest.mark.parametrize("name", ["apgd-ce", "apgd-t", "square"])
@pytest.mark.parametrize("seed", [0, 1])
def test_the_inference_copy_breaks_the_points_the_model_itself_breaks(model, big_test_data, name, seed):
    x, y = _correct(model, big_test_data)
    make = {"square": lambda: Square(0.05, queries=60), **{k: v for k, v in ATTACKS.items()}}
    plain = make[name]() if name == "square" else make[name](0.03)
    fast = make[name]() if name == "square" else make[name](0.03)
    fast.fast = True
    before = copy.deepcopy(model.state_dict())
    _, broken_plain = _run(plain, model, x, y, seed)
    _, broken_fast = _run(fast, model, x, y, seed)
    assert fast.fast_fallback == ""  # the copy was used...
    assert 0 < broken_plain.sum() < len(x)
    assert (broken_fast | ~broken_plain).all()  # ...and broke every point the model itself gave up
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the model is untouched


def test_inference_copy_folds_batchnorm_and_matches_the_logits(model, test_data):
    x, _ = test_data
    fast, why = inference_copy(model.eval(), x)
    assert why == "" and fast is not model
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the original keeps its BN
    assert not any(p.requires_grad for p in fast.parameters())
    with torch.no_grad():
        assert torch.allclose(fast(x), model(x), atol=1e-5)
    assert isinstance(fast, GradOrFrozen)  # no-gradient passes go to a frozen TorchScript copy...
    with torch.inference_mode():
        assert torch.allclose(fast.frozen(x[:5]), model(x[:5]), atol=1e-5)  # ...any batch size, not the traced one
    x_var = x[:5].clone().requires_grad_(True)
    (g_fast,) = torch.autograd.grad(fast(x_var).logsumexp(1).sum(), x_var)  # gradients go to the folded copy
    (g_model,) = torch.autograd.grad(model(x_var).logsumexp(1).sum(), x_var)
    assert torch.allclose(g_fast, g_model, atol=1e-5)


def test_a_frozen_copy_that_disagrees_is_not_used(model, test_data, monkeypatch):
    x, _ = test_data

    class OffByOne(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x) + torch.arange(self.inner(x).shape[1]) * 1e-2

    monkeypatch.setattr(torch.jit, "optimize_for_inference", OffByOne)
    fast, why = inference_copy(model.eval(), x)
    assert why == "" and not isinstance(fast, GradOrFrozen)  # the folded copy serves every pass


class NoisyModel(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x + 0.01 * torch.randn_like(x))


class Untraceable(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: fx cannot trace it
            return self.inner(x)
        return -self.inner(x)


class BufferWriter(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, x):
        self.calls += 1
        return self.inner(x)


def test_inference_copy_falls_back_to_the_model_when_it_cannot_be_trusted(model, test_data, monkeypatch):
    x, y = test_data
    noisy, untraceable, writer = NoisyModel(model).eval(), Untraceable(model).eval(), BufferWriter(model).eval()
    assert inference_copy(noisy, x) == (noisy, "not deterministic")
    assert inference_copy(writer, x) == (writer, "changes its buffers")  # the evaluation's buffer check must see it
    assert inference_copy(untraceable, x)[0] is untraceable
    import torch.fx.experimental.optimization as optimization

    def wrong_fuse(module):  # a fold that changes the function must be caught by the logits check
        broken = copy.deepcopy(module)
        with torch.no_grad():
            broken.bn.bias.add_(0.5)
        return broken

    monkeypatch.setattr(optimization, "fuse", wrong_fuse)
    assert inference_copy(model.eval(), x) == (model, "copy's logits differ")
    attack = APGDCE(0.03, steps=5)
    attack.fast = True
    attack(model, x, y)
    assert attack.fast_fallback == "copy's logits differ"


def test_work_counts_every_image_pass(model, test_data):
    x, y = _correct(model, test_data)
    counted = CountingModel(model).eval()
    square = Square(0.05, queries=30, eot_samples=2)
    x_adv = square(counted, x, y)
    assert square.work.forward == sum(counted.batch_sizes) and square.work.backward == 0
    with torch.no_grad():
        assert 0 < square.work.broken == int((model(x_adv).argmax(1) != y).sum()) < len(x)
    assert square.work.attacked == len(x) and square.work.seconds > 0

    pgd = PGD(
        0.03, steps=4
    )  # PGD does not score its last iterate, and no pass is spent on it (the evaluation re-scores)
    counted.batch_sizes.clear()
    pgd(counted, x, y)
    assert pgd.work.forward == sum(counted.batch_sizes) == 4 * len(x) and pgd.work.backward == 4 * len(x)
    assert pgd.work.broken == 0 and pgd.work.attacked == len(x)
    pgd(counted, x, y)
    assert pgd.work.attacked == 2 * len(x)  # summed over calls


def test_the_evaluation_records_its_verdict_and_the_re_scoring_as_each_attack_s_work(model, test_data):
    from hardenctl.data import ArrayDataset
    from hardenctl.evaluation import EvalConfig, evaluate

    x, y = test_data
    data = ArrayDataset(x[:24], y[:24], [str(i) for i in range(5)], "synthetic")
    report = evaluate(
        model,
        data,
        EvalConfig(attacks=["pgd", "square"], eps=0.05, n=24, batch_size=8, square_queries=20, large_eps_samples=0),
    )
    pgd, square = report.work["pgd"], report.work["square"]
    clean_correct = report.counts["clean_correct"]
    assert pgd["attacked"] == clean_correct and pgd["broken"] == clean_correct - report.counts["attacks"]["pgd"]
    assert (
        pgd["forward_passes"] == 21 * pgd["attacked"] and pgd["backward_passes"] == 20 * pgd["attacked"]
    )  # PGD-20 + verdict
    assert square["attacked"] == report.counts["attacks"]["pgd"] and square["backward_passes"] == 0
    assert square["broken"] == report.counts["attacks"]["pgd"] - report.counts["attacks"]["square"]


def test_evaluation_attacks_are_fast_and_training_attacks_are_not():
    assert all(a.fast for a in build_suite("standard", 0.03) + build_suite("quick", 0.03))
    assert all(a.fast for a in build_custom(["pgd", "square"], 0.03))
    assert not build_attack("pgd", 0.03).fast and not PGD(0.03).fast
