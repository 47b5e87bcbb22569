"""The one base class every attack builds on.

Why a base class: the things that make an attack *trustworthy* are the same for all
of them and must be written once — the model is put in ``eval()`` mode while it is
attacked (and restored afterwards), perturbations are projected onto the ε-ball and
the [0, 1] box, gradients are averaged over EOT draws for randomised models, and
points whose input gradient is zero or non-finite are counted so the report can flag
gradient masking. A subclass only writes :meth:`Attack.perturb`.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import torch
from torch import Tensor, nn

from ..errors import UserError
from .inference import GradOrFrozen, inference_copy
from .streams import SampleStreams

NORMS = ("linf", "l2")
LossFn = Callable[[Tensor, Tensor], Tensor]  # (logits, y) -> per-sample loss


@contextlib.contextmanager
def evaluating(model: nn.Module):
    """``model`` in eval mode for the block, then back in the mode it came in, also when the block raises: every
    attack, evaluation and training-time score runs through here, so BN statistics and dropout are never left
    switched by a failed batch.

    Args:
        model: the model to switch.
    """
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@dataclass
class GradientStats:
    """Counts of points whose first input gradient was useless (a masking symptom).

    ``zero`` counts points whose attack-loss gradient is exactly zero, which an honest model
    also shows when a confident softmax saturates in fp32; ``flat`` counts the subset whose
    logit-margin gradient is zero too, which no differentiable honest model shows (input
    quantisation, stop-gradients and input-ignoring models do).
    """

    points: int = 0
    zero: int = 0
    nonfinite: int = 0
    flat: int = 0

    def add(self, other: "GradientStats") -> None:
        self.points += other.points
        self.zero += other.zero
        self.nonfinite += other.nonfinite
        self.flat += other.flat


@dataclass
class AttackWork:
    """What an attack spent and achieved, summed over its calls: the evidence behind a speed claim.

    Passes are counted in images (a forward pass of a batch of 46 is 46 forward image-passes;
    each EOT draw counts), so a change that drops finished points shows up as less work, not
    only as less time. ``attacked`` counts the points given to the attack, ``broken`` those
    it returned misclassified (a point misclassified at ``x`` itself counts as broken).
    """

    seconds: float = 0.0
    forward: int = 0
    backward: int = 0
    attacked: int = 0
    broken: int = 0

    def add(self, other: "AttackWork") -> None:
        self.seconds += other.seconds
        self.forward += other.forward
        self.backward += other.backward
        self.attacked += other.attacked
        self.broken += other.broken


class Attack:
    """An attack on a model that takes [0, 1] pixels and returns logits.

    Args:
        eps: radius of the threat model (L∞ or L2), in [0, 1] pixel units.
        norm: ``"linf"`` or ``"l2"``.
        eot_samples: gradients averaged over this many forward passes (1 for a
            deterministic model; >1 for Expectation over Transformation).

    Attributes:
        fast: attack a frozen, BN-folded, channels-last copy of the model (checked against
            the model's own logits first; see :mod:`.inference`). Off by default because a
            training loop attacks a model whose weights change every step; the evaluation
            suites turn it on. ``fast_fallback`` says why a call used the model itself.
        work: an :class:`AttackWork`, summed over calls (reset it to measure one call).
        search_dtype: ``torch.bfloat16`` searches under autocast in that precision (about twice the tensor-core
            throughput on a GPU); every "fooled" an attack acts on (dropping a point, keeping an iterate, stopping
            Square) is then confirmed by a full-precision pass first, so the search never gives up on a point that
            only rounding fooled, and the evaluation's verdict is a full-precision pass anyway. None: full precision.
    """

    name: ClassVar[str] = "attack"

    def __init__(self, eps: float, norm: str = "linf", eot_samples: int = 1):
        if not (eps >= 0) or eps != eps:
            raise UserError(f"eps must be a non-negative number, got {eps}", "pass e.g. --eps 8/255")
        if norm not in NORMS:
            raise UserError(f"unknown norm {norm!r}", f"use one of {', '.join(NORMS)}")
        if eot_samples < 1:
            raise UserError(f"eot_samples must be >= 1, got {eot_samples}", "pass --eot-samples 20")
        self.eps = float(eps)
        self.norm = norm
        self.eot_samples = int(eot_samples)
        self.gradient_stats = GradientStats()
        self.work = AttackWork()
        self.fast = False
        self.fast_fallback = ""
        self.search_dtype: torch.dtype | None = None
        self._count_next_gradient = False
        self._broken: Tensor | None = None
        # per-image random streams for the rows of the next call (``hardenctl eval --sequential``: an image's random
        # start must not depend on its batch); None draws from torch's global generator, as every other run does
        self.streams: SampleStreams | None = None

    # -- the one method a subclass writes ------------------------------------------
    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        raise NotImplementedError

    # -- the shared entry point ----------------------------------------------------
    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """Return adversarial examples for ``x`` (same shape), model left as found."""
        started = time.perf_counter()
        self._count_next_gradient = True
        self._broken = None
        with evaluating(model):
            target = model
            if self.fast and x.shape[0] > 0:
                target, self.fast_fallback = inference_copy(model, x)
                if self.search_dtype is not None and isinstance(target, GradOrFrozen):
                    target = target.grad  # the frozen TorchScript copy is fp32-prepacked: autocast would not reach it
            with torch.enable_grad(), self.searching(x):
                x_adv = self.perturb(target, x.detach(), y)
            if x_adv.is_inference():  # made under inference_mode: give the caller an ordinary tensor
                x_adv = x_adv.clone()
            # the points the attack knows it broke (APGD, Square); the others spend no pass on it: the evaluation
            # re-scores every returned point anyway and records its verdict as the attack's "broken"
            broken = self._broken
        self.work.add(
            AttackWork(
                time.perf_counter() - started,
                attacked=x.shape[0],
                broken=int(broken.sum()) if broken is not None else 0,
            )
        )
        return x_adv.detach()

    def searching(self, x: Tensor) -> contextlib.AbstractContextManager:
        """The precision the search runs in: autocast to ``search_dtype``, or nothing."""
        if self.search_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(x.device.type, dtype=self.search_dtype)

    def misclassified(self, model: nn.Module, x: Tensor, logits: Tensor, y: Tensor) -> Tensor:
        """Per row of ``x``: misclassified, as the search's ``logits`` say and, for a reduced-precision search,
        as a full-precision pass confirms (only the rows the search thinks fooled are re-scored)."""
        wrong = logits.argmax(dim=1) != y
        if self.search_dtype is None or not bool(wrong.any()):
            return wrong
        rows = wrong.nonzero().squeeze(1)
        wrong[rows] = self.exact_predict(model, x[rows]).argmax(dim=1) != y[rows]
        return wrong

    def exact_predict(self, model: nn.Module, x: Tensor) -> Tensor:
        """:meth:`predict` in full precision, whatever the search's precision (autocast off)."""
        with torch.autocast(x.device.type, enabled=False):
            return self.predict(model, x.float())

    def report_broken(self, fooled: Tensor) -> None:
        """Called by an attack that knows which of its returned points are misclassified (saves a pass)."""
        self._broken = fooled

    def settings(self) -> dict[str, Any]:
        """Every setting given when the attack was made, by its constructor's names (a subclass adds its own): what
        :meth:`__repr__` shows and a report's ``attack_list`` records, so two reports name the same attack only if it
        ran the same way. How the evaluation runs it (``fast``, ``search_dtype``, ``streams``) is not a setting."""
        return {"eps": self.eps, "norm": self.norm, "eot_samples": self.eot_samples}

    def __repr__(self) -> str:
        """``PGD(eps=0.031373, norm=linf, eot_samples=1, steps=20, ...)``: every setting (torchattacks' habit); eps and
        norm first and written as they always were."""
        shown = ", ".join(f"{name}={_shown(value)}" for name, value in self.settings().items())
        return f"{type(self).__name__}({shown})"

    # -- helpers shared by all attacks --------------------------------------------------
    def project(self, x_adv: Tensor, x: Tensor) -> Tensor:
        """Closest point to ``x_adv`` in the ε-ball around ``x`` intersected with [0, 1]."""
        delta = x_adv - x
        if self.norm == "linf":
            delta = delta.clamp(-self.eps, self.eps)
        else:
            norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
            factor = (self.eps / norms).clamp(max=1.0)
            delta = delta * factor.view(-1, *([1] * (x.dim() - 1)))
        # Clamping to the box only shrinks |delta| coordinate-wise, so the point stays in the ball.
        return (x + delta).clamp(0.0, 1.0)

    def random_start(self, x: Tensor) -> Tensor:
        """A uniformly random point of the ε-ball (L∞) or a random direction and radius (L2)."""
        if self.norm == "linf":
            if self.streams is None:
                delta = torch.empty_like(x).uniform_(-self.eps, self.eps)
            else:
                delta = (self.uniform_like(x) * 2 - 1) * self.eps
        else:
            delta = self.normal_like(x)
            norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
            if self.streams is None:
                radius = self.eps * torch.rand(x.shape[0], device=x.device, dtype=x.dtype)
            else:
                radius = self.eps * self.streams.uniform((), x.device, x.dtype).view(-1)
            delta = delta * (radius / norms).view(-1, *([1] * (x.dim() - 1)))
        return self.project(x + delta, x)

    def uniform_like(self, x: Tensor, rows: Tensor | None = None) -> Tensor:
        """U[0, 1) shaped like ``x``: from each image's own stream when :attr:`streams` is set (``rows``: which rows of
        the call's batch ``x`` holds), else from the global generator."""
        if self.streams is None:
            return torch.rand_like(x)
        streams = self.streams if rows is None else self.streams.rows(rows)
        return streams.uniform(tuple(x.shape[1:]), x.device, x.dtype)

    def normal_like(self, x: Tensor, rows: Tensor | None = None) -> Tensor:
        """N(0, 1) shaped like ``x``, from the same source as :meth:`uniform_like`."""
        if self.streams is None:
            return torch.randn_like(x)
        streams = self.streams if rows is None else self.streams.rows(rows)
        return streams.normal(tuple(x.shape[1:]), x.device, x.dtype)

    def step(self, x_adv: Tensor, grad: Tensor, step_size: float | Tensor) -> Tensor:
        """Steepest-ascent step for the norm: sign for L∞, normalised gradient for L2."""
        if isinstance(step_size, Tensor) and step_size.dim() == 1:
            step_size = step_size.view(-1, *([1] * (x_adv.dim() - 1)))
        if self.norm == "linf":
            return x_adv + step_size * grad.sign()
        norms = grad.flatten(1).norm(dim=1).clamp_min(1e-12)
        return x_adv + step_size * grad / norms.view(-1, *([1] * (grad.dim() - 1)))

    def gradient(self, model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn) -> tuple[Tensor, Tensor, Tensor]:
        """Per-sample loss, input gradient and logits, averaged over ``eot_samples`` draws.

        The first call per attack run records how many points had an all-zero or
        non-finite gradient; non-finite entries are zeroed so the attack keeps going.
        """
        grad_sum = loss_sum = logits_sum = None
        self.work.forward += x.shape[0] * self.eot_samples
        self.work.backward += x.shape[0] * self.eot_samples
        for _ in range(self.eot_samples):
            x_var = x.detach().requires_grad_(True)
            logits = model(x_var).float()  # a no-op in fp32; under bf16 autocast the loss and its ranking need fp32
            loss = loss_fn(logits, y)
            (grad,) = torch.autograd.grad(loss.sum(), x_var)
            if grad_sum is None:  # the common single-draw case allocates nothing extra
                grad_sum, loss_sum, logits_sum = grad, loss.detach().float(), logits.detach()
            else:
                grad_sum = grad_sum + grad
                loss_sum = loss_sum + loss.detach().float()
                logits_sum = logits_sum + logits.detach()
        draws = self.eot_samples
        grad = grad_sum if draws == 1 else grad_sum / draws
        loss_mean = loss_sum if draws == 1 else loss_sum / draws
        logits_mean = logits_sum if draws == 1 else logits_sum / draws
        if self._count_next_gradient:
            self._count_next_gradient = False
            flat = grad.flatten(1)
            nonfinite = ~torch.isfinite(flat).all(dim=1)
            zero = (flat == 0).all(dim=1)
            flat_margin = int(zero.sum())
            if flat_margin:
                flat_margin = int(_margin_gradient_is_zero(model, x[zero], y[zero]).sum())
                self.work.forward += int(zero.sum())
                self.work.backward += int(zero.sum())
            self.gradient_stats.add(GradientStats(x.shape[0], int(zero.sum()), int(nonfinite.sum()), flat_margin))
        grad = torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)
        return loss_mean, grad, logits_mean

    def predict(self, model: nn.Module, x: Tensor) -> Tensor:
        """Logits averaged over EOT draws (one pass for a deterministic model).

        Under ``inference_mode`` (no autograd bookkeeping at all); the result is cloned out of
        it so callers may update it in place.
        """
        self.work.forward += x.shape[0] * self.eot_samples
        with torch.inference_mode():
            logits = model(x)
            for _ in range(self.eot_samples - 1):
                logits = logits + model(x)
            if self.eot_samples > 1:
                logits = logits / self.eot_samples
        return logits.float().clone()


def _shown(value: Any) -> str:
    """A setting as :meth:`Attack.__repr__` writes it: numbers to 5 significant digits, a loss function by its name."""
    if isinstance(value, float):
        return f"{value:.5g}"
    if callable(value):
        return getattr(value, "__name__", type(value).__name__)
    return str(value)


def _margin_gradient_is_zero(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Per point: is the gradient of the logit margin (true logit minus the best other) exactly zero?

    The margin does not saturate like softmax cross-entropy, so a zero here means the
    model's output does not depend on its input locally: masking, not confidence.
    """
    x_var = x.detach().requires_grad_(True)
    logits = model(x_var)
    true = logits.gather(1, y.view(-1, 1)).squeeze(1)
    others = logits.scatter(1, y.view(-1, 1), float("-inf")).amax(dim=1)
    (grad,) = torch.autograd.grad((true - others).sum(), x_var)
    flat = grad.flatten(1)
    return (flat == 0).all(dim=1) | ~torch.isfinite(flat).all(dim=1)


def keep_misclassified(x_best: Tensor, fooled: Tensor, x_new: Tensor, wrong: Tensor) -> None:
    """Record ``x_new`` for points it fools (``wrong``, see :meth:`Attack.misclassified`) not fooled before (in place).

    Attacks return the first iterate that fools the model rather than the last one,
    which may have drifted back to the correct class.

    Args:
        x_best: the first fooling iterate of each point so far; updated in place.
        fooled: per point: fooled already; updated in place.
        x_new: this iterate.
        wrong: per point: misclassified at ``x_new``.
    """
    newly = wrong & ~fooled
    if newly.any():
        x_best[newly] = x_new[newly].detach()
        fooled |= newly
