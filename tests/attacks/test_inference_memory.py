"""Memory flat in the number of batches: the attacked inference copy is built once per model and weights.

Every torch.jit trace and freeze registers compiled code that torch never frees (the frozen copy holds every weight),
so building the copy per attack call grew RSS by the model's size per batch and attack (issue 20 item 6: +664 MB
from n = 250 to 2,500 at 320 px). Counting the builds is the cheap, deterministic stand-in for an RSS measurement.
"""

from __future__ import annotations

import torch

from hardenctl.attacks import FGSM
from hardenctl.attacks.inference import GradOrFrozen, inference_copy


def _count_traces(monkeypatch) -> list[int]:
    calls: list[int] = []
    trace = torch.jit.trace

    def counting(*args, **kwargs):
        calls.append(1)
        return trace(*args, **kwargs)

    monkeypatch.setattr(torch.jit, "trace", counting)
    return calls


def test_the_copy_is_traced_once_however_many_batches_are_attacked(model, test_data, monkeypatch):
    x, y = test_data
    traces = _count_traces(monkeypatch)
    attack = FGSM(0.03)
    attack.fast = True
    for start in range(0, len(x), 16):  # four batches, as an evaluation feeds them
        attack(model, x[start : start + 16], y[start : start + 16])
        assert attack.fast_fallback == ""
    other = FGSM(0.05)  # another attack of the suite on the same model shares the copy
    other.fast = True
    other(model, x, y)
    assert len(traces) == 1


def test_changed_weights_get_a_fresh_copy_that_matches_them(model, test_data, monkeypatch):
    x, _ = test_data
    traces = _count_traces(monkeypatch)
    first, why = inference_copy(model.eval(), x)
    assert why == "" and isinstance(first, GradOrFrozen)
    with torch.no_grad():  # an optimizer step between two evaluations of a training run
        model.fc.bias.add_(0.3)
        model.conv.weight.mul_(1.1)
    second, why = inference_copy(model, x)
    assert why == "" and second is not first and len(traces) == 2  # rebuilt, not refused as "logits differ"
    with torch.inference_mode():
        assert torch.allclose(second(x), model(x), atol=1e-5)
    third, _ = inference_copy(model, x)
    assert len(traces) == 2 and third.grad is second.grad  # unchanged weights: the cached copy


def test_a_first_call_too_small_to_trace_still_gets_the_frozen_copy_later(model, test_data):
    x, _ = test_data
    fast, why = inference_copy(model.eval(), x[:2])
    assert why == "" and not isinstance(fast, GradOrFrozen)  # 2 images: nothing to check a trace on
    fast, why = inference_copy(model, x)
    assert why == "" and isinstance(fast, GradOrFrozen)


def test_a_model_fx_cannot_trace_is_tried_once_not_per_batch(model, test_data, monkeypatch):
    """A refusal is kept like a copy: the deep copy and the fx trace were repeated on every batch and attack."""
    import torch.fx.experimental.optimization as fx_optimization

    class Branchy(torch.nn.Module):  # data-dependent control flow: torch.fx cannot trace it
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x) if x.sum() > -1 else -self.inner(x)

    tries: list[int] = []
    fuse = fx_optimization.fuse
    monkeypatch.setattr(fx_optimization, "fuse", lambda *a, **k: tries.append(1) or fuse(*a, **k))
    x, y = test_data
    branchy = Branchy(model).eval()
    for start in range(0, len(x), 16):
        target, why = inference_copy(branchy, x[start : start + 16])
        assert target is branchy and why.startswith("not traceable")
    assert len(tries) == 1
