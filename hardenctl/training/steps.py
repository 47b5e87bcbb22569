"""One training step (attack in eval mode, loss in train mode) and the per-epoch held-out monitor."""

from __future__ import annotations

import contextlib
from typing import Callable

import torch
from torch import Tensor, nn

from ..attacks import FGSM, PGD, Attack, evaluating
from ..data import Dataset
from ..evaluation import SuiteRun, run_suite
from ..recipes import LossFn, Recipe, RecipeConfig
from .runtime import Distributed


class TrainingPGD(Attack):
    """PGD as the recipes' official training code runs it (model in eval mode: :class:`Attack`).

    Unlike the evaluation PGD (which keeps the first iterate that fools the model), it
    returns the *last* iterate, maximises the loss the recipe asks for
    (:meth:`Recipe.attack_loss`), and starts from a uniform point of the ball (Madry) or from
    x + σ·N(0, I) (MART, TRADES; not projected, as in their code). The start is drawn from
    ``generator`` for the whole global batch and this process takes its share, like the
    augmentation, so it does not depend on the number of processes.

    ``attack: fgsm-rs`` (Wong, Rice, Kolter, ICLR 2020) is one step of ``fgsm_step``·ε from a uniform
    random point of the ball; ``fgsm`` the same step from x itself. :meth:`set_eps` moves ε during the
    run (ε warm-up, the overfitting guard's lowering) with the step size in proportion.
    """

    name = "training-pgd"

    def __init__(
        self,
        eps: float,
        steps: int,
        alpha: float,
        start: str,
        start_std: float,
        attack_loss: Callable[[nn.Module, Tensor, Tensor], LossFn],
        rank: int = 0,
        world_size: int = 1,
    ):
        super().__init__(eps, "linf")
        self.steps, self.alpha, self.start, self.start_std = int(steps), float(alpha), start, float(start_std)
        self.attack_loss = attack_loss
        self.rank, self.world_size = rank, world_size
        self.generator: torch.Generator | None = None  # the engine sets one per step
        self.target_eps, self.target_alpha = self.eps, self.alpha

    @classmethod
    def for_recipe(cls, recipe: Recipe, rank: int = 0, world_size: int = 1) -> "TrainingPGD":
        """The recipe's training attack: PGD as configured, or one FGSM step (``fgsm``, ``fgsm-rs``).

        Args:
            recipe: the recipe (its attack settings and ``attack_loss``).
            rank: this process.
            world_size: the processes (the start is drawn for the global batch).
        """
        c = recipe.config
        if c.attack == "pgd":
            return cls(
                c.eps,
                c.attack_steps,
                c.attack_alpha,
                c.attack_start,
                c.attack_start_std,
                recipe.attack_loss,
                rank,
                world_size,
            )
        start = "uniform" if c.attack == "fgsm-rs" else "none"
        return cls(c.eps, 1, c.fgsm_step * c.eps, start, c.attack_start_std, recipe.attack_loss, rank, world_size)

    def set_eps(self, eps: float) -> None:
        """Attack at radius ``eps`` from now on, the step size scaled alike (α·eps/ε of the recipe).

        Args:
            eps: the new radius.
        """
        self.eps = float(eps)
        self.alpha = self.target_alpha * self.eps / self.target_eps if self.target_eps > 0 else 0.0

    def start_point(self, x: Tensor) -> Tensor:
        """Where the attack starts: ``x``, a uniform point of the ball, or x + σ·N(0, I), drawn for the global batch.

        Args:
            x: this process's clean batch.
        """
        if self.start == "none":
            return x.clone()
        shape = (x.shape[0] * self.world_size, *x.shape[1:])
        draw = torch.randn if self.start == "normal" else torch.rand
        noise = draw(shape, generator=self.generator)[self.rank :: self.world_size].to(device=x.device, dtype=x.dtype)
        if self.start == "normal":
            return x + self.start_std * noise
        return self.project(x + self.eps * (2 * noise - 1), x)

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """The last iterate of the attack on ``x`` (``x`` itself at ε 0).

        Args:
            model: the bare model (eval mode: :class:`Attack` switches it).
            x: the clean batch.
            y: its labels.
        """
        if self.eps == 0:  # the first steps of an ε warm-up: nothing to attack, and no draw to take
            return x.clone()
        loss_fn = self.attack_loss(model, x, y)
        x_adv = self.start_point(x)
        for _ in range(self.steps):
            _, grad, _ = self.gradient(model, x_adv, y, loss_fn)
            x_adv = self.project(self.step(x_adv, grad, self.alpha), x)
        return x_adv

    def __repr__(self) -> str:
        return f"TrainingPGD(eps={self.eps:.5g}, steps={self.steps}, alpha={self.alpha:.5g}, start={self.start})"


def training_attack(recipe: Recipe, rank: int = 0, world_size: int = 1) -> TrainingPGD | None:
    """The recipe's training attack, or None when it trains on clean inputs (``pgd`` with 0 steps).

    Args:
        recipe: the recipe.
        rank: this process.
        world_size: the processes.
    """
    c = recipe.config
    if c.attack == "pgd" and c.attack_steps == 0:
        return None
    return TrainingPGD.for_recipe(recipe, rank, world_size)


def training_step(
    net: nn.Module,
    model: nn.Module,
    recipe: Recipe,
    attack: Attack | None,
    x: Tensor,
    y: Tensor,
    autocast: Callable[[], contextlib.AbstractContextManager],
) -> Tensor:
    """The loss of one batch: the attack on ``model`` (eval mode), then ``recipe.loss`` on ``net`` (train mode).

    ``net`` is ``model`` itself, or its DDP wrapper (the attack runs on the bare module so that
    its input-gradient passes never touch DDP's gradient synchronisation).

    Args:
        net: what the loss runs through (the model or its DDP wrapper).
        model: the bare model the attack runs on.
        recipe: the recipe (its ``loss`` and ``attack_context``).
        attack: the training attack (None: clean inputs).
        x: the batch, on the device.
        y: its labels.
        autocast: a fresh autocast context per call (``contextlib.nullcontext`` at full precision).
    """
    with autocast():
        with recipe.attack_context(model):
            x_adv = attack(model, x, y) if attack is not None else x
        return recipe.loss(net, x, y, x_adv)


def clean_and_pgd_accuracy(
    model: nn.Module,
    data: Dataset | None,
    config: RecipeConfig,
    seed: int,
    dist: Distributed,
    batch_size: int,
    draws: int = 1,
) -> tuple[float | None, float | None]:
    """(clean, PGD robust) accuracy of ``data`` in eval mode, split over the processes.

    ``draws`` > 1 (a randomised model): PGD gradients are averaged over that many draws, clean accuracy is the
    mean over draws and a point is robust only if correct on every re-scoring draw, as in ``hardenctl eval``.

    Args:
        model: the model scored (its train/eval mode is restored after).
        data: the images (None or empty: (None, None)).
        config: the recipe config (``eps``, ``monitor_steps``).
        seed: the run's seed.
        dist: the processes the images are split over.
        batch_size: images per batch on each process.
        draws: EOT draws of a randomised model.
    """
    if data is None or len(data) == 0:
        return None, None
    pgd = PGD(config.eps, "linf", eot_samples=draws, steps=config.monitor_steps, alpha=config.eps / 4)
    clean, robust = _correct_under(pgd, model, data, seed, dist, batch_size, "attack")
    return clean / len(data), robust / len(data)


def fgsm_accuracy(
    model: nn.Module,
    data: Dataset | None,
    config: RecipeConfig,
    seed: int,
    dist: Distributed,
    batch_size: int,
    draws: int = 1,
) -> float | None:
    """Accuracy under FGSM (one step of ε, no random start) at the recipe's ε, eval mode, split over the processes.

    Next to :func:`clean_and_pgd_accuracy`'s PGD accuracy it shows catastrophic overfitting: a model that has learnt
    to defeat the one-step attack only keeps a high FGSM accuracy while its PGD accuracy collapses (Wong et al., ICLR
    2020).

    Args:
        model: the model scored (its train/eval mode is restored after).
        data: the images (None or empty: None).
        config: the recipe config (``eps``).
        seed: the run's seed.
        dist: the processes the images are split over.
        batch_size: images per batch on each process.
        draws: EOT draws of a randomised model.
    """
    if data is None or len(data) == 0:
        return None
    _, robust = _correct_under(FGSM(config.eps, "linf", eot_samples=draws), model, data, seed, dist, batch_size, "fgsm")
    return robust / len(data)


def _correct_under(
    attack: Attack, model: nn.Module, data: Dataset, seed: int, dist: Distributed, batch_size: int, stage: str
) -> tuple[float, float]:
    """(clean, robust) correct counts of ``data`` under ``attack``, in eval mode: each process scores every
    ``world_size``-th image and the counts are summed over the processes."""
    shard = data.take(torch.arange(dist.rank, len(data), dist.world_size))
    device = next(model.parameters()).device
    run = SuiteRun([attack], attack.eps, "linf", batch_size, seed, attack.eot_samples, device)
    with evaluating(model):
        result = run_suite(model, shard, run, stage=stage)
    clean, robust = dist.sum([float(result.clean_correct.sum()), float(result.robust.sum())])
    return clean, robust
