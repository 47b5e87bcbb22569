"""Named attack suites: ``quick``, ``standard`` (our AutoAttack protocol), ``autoattack`` (reference).

A suite is an ordered list of attacks; the evaluator runs each on the points that
are still robust and keeps the worst case per sample.
"""

from __future__ import annotations

from typing import Any, Sequence

from torch import Tensor, nn

from ..errors import UserError
from .apgd import APGDCE, APGDT
from .base import Attack
from .pgd import PGD
from .square import Square

SUITES = ("quick", "standard", "autoattack")


class ReferenceAutoAttack(Attack):
    """The ``pyautoattack`` package's standard AutoAttack, for RobustBench-comparable numbers."""

    name = "autoattack"

    def __init__(self, eps: float, norm: str = "linf", eot_samples: int = 1, seed: int = 0):
        super().__init__(eps, norm, eot_samples)
        try:
            from pyautoattack import AutoAttack  # noqa: F401
        except ImportError:
            raise UserError(
                "--suite autoattack needs the reference AutoAttack package", "pip install 'hardenctl[autoattack]'"
            ) from None
        self.seed = seed

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "seed": self.seed}

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        from pyautoattack import AutoAttack

        version = "rand" if self.eot_samples > 1 else "standard"
        runner = AutoAttack(
            model,
            norm="Linf" if self.norm == "linf" else "L2",
            eps=self.eps,
            version=version,
            device=x.device,
            seed=self.seed,
        )  # seed=None would seed from the clock
        # pyautoattack 0.2.0's gradient check calls .view on the gradient: give it contiguous NCHW tensors.
        x_adv, _ = runner.run_standard_evaluation(x.contiguous(), y.contiguous(), batch_size=x.shape[0])
        return x_adv


def _fast(attacks: list[Attack]) -> list[Attack]:
    """Evaluation attacks run on a checked, BN-folded inference copy of the model (see ``inference.py``)."""
    for attack in attacks:
        attack.fast = True
    return attacks


def build_suite(
    name: str,
    eps: float,
    norm: str = "linf",
    eot_samples: int = 1,
    seed: int = 0,
    apgd_steps: int = 100,
    square_queries: int = 5000,
) -> list[Attack]:
    """The attacks of a named suite, in run order.

    Args:
        name: ``quick``, ``standard`` or ``autoattack``.
        eps: radius of the threat model.
        norm: ``linf`` or ``l2``.
        eot_samples: EOT draws per gradient and score (1 for a deterministic model).
        seed: the reference AutoAttack's seed (``autoattack`` only; the others use torch's generator).
        apgd_steps: iterations of each APGD attack.
        square_queries: Square's query budget per point.
    """
    if name == "quick":
        return _fast([PGD(eps, norm, eot_samples, steps=20), APGDCE(eps, norm, eot_samples, steps=apgd_steps)])
    if name == "standard":
        return _fast(
            [
                APGDCE(eps, norm, eot_samples, steps=apgd_steps),
                APGDT(eps, norm, eot_samples, steps=apgd_steps),
                Square(eps, norm, eot_samples, queries=square_queries),
            ]
        )
    if name == "autoattack":
        return [ReferenceAutoAttack(eps, norm, eot_samples, seed=seed)]
    raise UserError(f"unknown suite {name!r}", f"use one of {', '.join(SUITES)}, or --attacks")


def build_custom(
    names: Sequence[str],
    eps: float,
    norm: str = "linf",
    eot_samples: int = 1,
    apgd_steps: int = 100,
    square_queries: int = 5000,
) -> list[Attack]:
    """Attacks from a ``--attacks`` list such as ``pgd,apgd-ce,square``.

    Args:
        names: registry names in run order, each at most once.
        eps: radius of the threat model.
        norm: ``linf`` or ``l2``.
        eot_samples: EOT draws per gradient and score.
        apgd_steps: iterations of APGD-CE and APGD-T.
        square_queries: Square's query budget per point.
    """
    from . import build_attack

    duplicated = sorted({name for name in names if list(names).count(name) > 1})
    if duplicated:
        raise UserError(
            f"--attacks names {', '.join(duplicated)} more than once",
            "list each attack once (use --apgd-steps etc. for budgets)",
        )
    attacks = []
    for name in names:
        kwargs: dict = {}
        if name in (APGDCE.name, APGDT.name):
            kwargs["steps"] = apgd_steps
        elif name == Square.name:
            kwargs["queries"] = square_queries
        attacks.append(build_attack(name, eps, norm, eot_samples, **kwargs))
    if not attacks:
        raise UserError("--attacks is empty", "pass e.g. --attacks pgd,apgd-ce")
    return _fast(attacks)
