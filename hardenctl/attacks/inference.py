"""A faster copy of the attacked model for the passes an evaluation attack makes.

Why: an evaluation spends almost all its time in forward (and backward) passes of small
batches; Square alone makes 5000 sequential forward passes. In ``eval()`` mode a
BatchNorm after a convolution is an affine map that can be folded into the convolution's
weights, which removes a whole layer's memory traffic forward and backward, and a
channels-last layout is faster for oneDNN convolutions on CPU. The copy computes the same
function, so an attack on it is the same attack; the attacked model itself is never
changed. The copy is only used after its logits were checked against the original's on
the very images being attacked, and only when the original gives the same logits twice
(a randomised model, attacked with EOT, keeps its own forward), and only when those
passes left the model's buffers as they were.
"""

from __future__ import annotations

import copy
import warnings
import weakref
from typing import Any

import torch
from torch import Tensor, nn

CHECK_IMAGES = 16  # images the copy is checked on: enough to exercise every layer, cheap next to an attack
RELATIVE_TOLERANCE = 1e-4  # of the largest logit: folding changes float rounding only (~1e-6 seen)


def inference_copy(model: nn.Module, x: Tensor) -> tuple[nn.Module, str]:
    """``(copy, "")`` when a frozen, BN-folded copy of ``model`` matches it on ``x``, else ``(model, why not)``.

    The model must already be in ``eval()`` mode (the attack's ``__call__`` sees to that). The copy is built once per
    model and weights (see :func:`_built`) and checked against the model on every call's own images. The checks run on
    forked random streams: a randomised model draws noise in them, and how many draws depends on whether a copy was
    already built in this process, which would make a batch's attack depend on what ran before it (shards and resumed
    runs would then differ from one process).

    Args:
        model: the attacked model, in ``eval()`` mode.
        x: the call's images: the copy must give the model's logits on them.
    """
    with torch.random.fork_rng(devices=[x.device] if x.is_cuda else []):
        return _checked_copy(model, x)


def _checked_copy(model: nn.Module, x: Tensor) -> tuple[nn.Module, str]:
    x = x[:CHECK_IMAGES].detach()
    built = _built(model, x)
    if isinstance(built, str):
        return model, built
    fast, frozen = built
    buffers = [b.clone() for b in model.buffers()]
    with torch.inference_mode():
        first, second = model(x), model(x)
        if not isinstance(first, Tensor) or not torch.equal(first, second):
            return model, "not deterministic"
    if any(not torch.equal(a, b) for a, b in zip(buffers, model.buffers())):
        # A model whose forward writes its own state is attacked as it is, so the evaluation's
        # buffer check still sees every pass.
        return model, "changes its buffers"
    try:
        with torch.inference_mode():
            folded = fast(x)
    except Exception as error:  # noqa: BLE001
        return model, f"copy fails ({type(error).__name__})"
    if folded.shape != first.shape or folded.dtype != first.dtype:
        return model, "copy's logits differ in shape"
    limit = RELATIVE_TOLERANCE * max(1.0, float(first.abs().max()))
    if (
        not torch.isfinite(folded).all()
        or float((folded - first).abs().max()) > limit
        or not torch.equal(folded.argmax(dim=1), first.argmax(dim=1))
    ):
        return model, "copy's logits differ"
    if frozen is None and x.shape[0] >= 3:  # not tried yet (the first call had too few images to trace on)
        frozen = _frozen(fast, x)
        _COPIES[model] = (_weights_key(model, x), fast, frozen)
    if not isinstance(frozen, nn.Module) or not _agrees(frozen, x, first, limit):
        return fast, ""
    return GradOrFrozen(fast, frozen), ""


# model -> (weights key, folded copy or why there is none, frozen copy: None before it was tried, False when tracing
# failed). Why a cache: every torch.jit trace and freeze registers a new compiled type that torch never frees (the
# frozen one holds a copy of every weight), so building them per attack call leaked the model's size per batch and
# attack: RSS grew with n.
_COPIES: "weakref.WeakKeyDictionary[nn.Module, tuple[tuple, nn.Module, Any]]" = weakref.WeakKeyDictionary()


def _weights_key(model: nn.Module, x: Tensor) -> tuple:
    """What a built copy depends on: every parameter and buffer (storage and in-place version: an optimizer step or
    ``load_state_dict`` bumps it) and the images' kind (a trace is specific to the dimensions it saw)."""
    tensors = (*model.parameters(), *model.buffers())
    return (
        tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in tensors),
        x.dim(),
        tuple(x.shape[1:]),
        x.dtype,
        x.device,
    )


def _built(model: nn.Module, x: Tensor) -> "tuple[nn.Module, Any] | str":
    """``(folded copy, frozen copy or None or False)`` for ``model``'s current weights, built on first use; or why
    there is none."""
    from torch.fx.experimental.optimization import fuse

    key = _weights_key(model, x)
    cached = _COPIES.get(model)
    if cached is not None and cached[0] == key:
        return cached[1] if isinstance(cached[1], str) else (cached[1], cached[2])
    try:
        fast = fuse(copy.deepcopy(model)).eval().requires_grad_(False)
    except Exception as error:  # noqa: BLE001 - any model fx cannot trace keeps its own forward
        why = f"not traceable ({type(error).__name__})"
        _COPIES[model] = (key, why, None)  # not copied and traced again on every batch and attack
        return why
    if x.dim() == 4:
        fast = ChannelsLast(fast.to(memory_format=torch.channels_last))
    frozen = _frozen(fast, x) if x.shape[0] >= 3 else None
    _COPIES[model] = (key, fast, frozen)
    return fast, frozen


def _agrees(frozen: nn.Module, x: Tensor, expected: Tensor, limit: float) -> bool:
    """The frozen copy gives ``expected`` on ``x`` (a batch size baked into its trace shows here)."""
    try:
        with torch.inference_mode():
            got = frozen(x)
    except Exception:  # noqa: BLE001
        return False
    return (
        got.shape == expected.shape
        and float((got - expected).abs().max()) <= limit
        and torch.equal(got.argmax(dim=1), expected.argmax(dim=1))
    )


def _frozen(fast: nn.Module, x: Tensor) -> Any:
    """A frozen TorchScript copy with oneDNN weight prepacking for the no-gradient passes, or False.

    ``optimize_for_inference`` measured ~0.85x the time of the folded copy on a 21-image
    resnet10t forward (1 CPU thread). It is traced on 2 images and checked on every call's images (:func:`_agrees`),
    so a batch size baked into the trace is caught. The torch.jit APIs are deprecated (FutureWarning):
    when they fail or go, the folded copy serves these passes too. False (not None) is cached, so a failed trace is
    not tried again for the same weights.
    """
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            return torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(fast, x[:2]).eval()))
    except Exception:  # noqa: BLE001
        return False


class GradOrFrozen(nn.Module):
    """The folded copy when a gradient is needed, the frozen one (no autograd at all) otherwise."""

    def __init__(self, grad: nn.Module, frozen: nn.Module):
        super().__init__()
        self.grad, self.frozen = grad, frozen

    def forward(self, x: Tensor) -> Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            return self.grad(x)
        return self.frozen(x)


class ChannelsLast(nn.Module):
    """Feeds NHWC-strided images to a channels-last model: oneDNN then skips a layout conversion per layer."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x: Tensor) -> Tensor:
        return self.inner(x.contiguous(memory_format=torch.channels_last))
