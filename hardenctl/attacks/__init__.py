"""Attacks, one module each, and a name → class registry (``--attacks pgd,apgd-ce``)."""

from __future__ import annotations

from ..errors import UserError
from .apgd import APGDCE, APGDT
from .base import Attack, AttackWork, GradientStats, evaluating
from .fgsm import FGSM
from .pgd import PGD
from .square import Square

ATTACKS: dict[str, type[Attack]] = {cls.name: cls for cls in (FGSM, PGD, APGDCE, APGDT, Square)}


def build_attack(name: str, eps: float, norm: str = "linf", eot_samples: int = 1, **kwargs) -> Attack:
    """Instantiate an attack by its registry name.

    Args:
        name: a key of :data:`ATTACKS` (``fgsm``, ``pgd``, ``apgd-ce``, ``apgd-t``, ``square``).
        eps: radius of the threat model, in [0, 1] pixel units.
        norm: ``linf`` or ``l2``.
        eot_samples: forward passes each gradient or score is averaged over (1 for a deterministic model).
        **kwargs: the attack's own settings (``steps``, ``queries``, ...), passed to its constructor.
    """
    try:
        cls = ATTACKS[name]
    except KeyError:
        raise UserError(f"unknown attack {name!r}", f"use one of {', '.join(ATTACKS)}") from None
    return cls(eps=eps, norm=norm, eot_samples=eot_samples, **kwargs)


__all__ = [
    "evaluating",
    "ATTACKS",
    "Attack",
    "AttackWork",
    "GradientStats",
    "build_attack",
    "FGSM",
    "PGD",
    "APGDCE",
    "APGDT",
    "Square",
]
