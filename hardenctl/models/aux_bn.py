"""Auxiliary batch norm: a twin of every BatchNorm layer for adversarial and mediate batches.

Why: clean and adversarial images have different feature statistics. Normalising both with one
set of running statistics (and one affine transform) fits neither well, which is one reason
adversarial training costs clean accuracy (AdvProp, Xie et al. CVPR 2020; AdvAmd, Yu et al.
IJCAI 2023). Giving the adversarial batches their own BN keeps the main BN — the one that ships
— fitted to clean data only.

:func:`add_aux_bn` replaces each BatchNorm module (``nn.BatchNorm1d/2d/3d``, ``SyncBatchNorm``,
timm's ``BatchNormAct2d`` and anything else deriving from ``_BatchNorm``) by a
:class:`DualBatchNorm` holding the original module as ``main`` and a deep copy as ``aux``;
:func:`bn_route` picks which one every twin uses; :func:`remove_aux_bn` puts the ``main``
modules back, so the state dict has exactly the original keys and the model is a plain timm
model again.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Iterator

from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

ROUTES = ("main", "aux")


class DualBatchNorm(nn.Module):
    """``main`` for benign batches, ``aux`` for adversarial/mediate ones; ``route`` says which."""

    def __init__(self, main: nn.Module):
        super().__init__()
        self.main = main
        self.aux = copy.deepcopy(main)
        self.route = "main"

    def forward(self, x: Tensor) -> Tensor:
        return self.aux(x) if self.route == "aux" else self.main(x)

    def extra_repr(self) -> str:
        return f"route={self.route}"


def _replace(parent: nn.Module, wrap: bool) -> int:
    count = 0
    for name, child in parent.named_children():
        if wrap and isinstance(child, _BatchNorm):
            setattr(parent, name, DualBatchNorm(child))
            count += 1
        elif not wrap and isinstance(child, DualBatchNorm):
            setattr(parent, name, child.main)
            count += 1
        else:
            count += _replace(child, wrap)
    return count


def add_aux_bn(model: nn.Module) -> int:
    """Give every BatchNorm an auxiliary twin (in place); returns how many. 0 for BN-free models (e.g. ViTs).

    Args:
        model: the network whose BatchNorm layers get twins.
    """
    if any(isinstance(m, DualBatchNorm) for m in model.modules()):
        return 0  # already converted (e.g. prepare called twice)
    return _replace(model, wrap=True)


def remove_aux_bn(model: nn.Module) -> nn.Module:
    """Drop the auxiliary twins (in place), leaving the original modules and state-dict keys.

    Args:
        model: a network :func:`add_aux_bn` changed.
    """
    _replace(model, wrap=False)
    return model


def dual_bn_layers(model: nn.Module) -> list[DualBatchNorm]:
    """The :class:`DualBatchNorm` layers of ``model``, in module order.

    Args:
        model: any network.
    """
    return [m for m in model.modules() if isinstance(m, DualBatchNorm)]


@contextlib.contextmanager
def bn_route(model: nn.Module, route: str) -> Iterator[None]:
    """Route every twin in ``model`` to ``main`` or ``aux`` inside the block, then restore.

    Args:
        model: a network with twins (none: nothing to route).
        route: ``main`` or ``aux``.
    """
    if route not in ROUTES:
        raise ValueError(f"route must be one of {ROUTES}, got {route!r}")
    layers = dual_bn_layers(model)
    before = [m.route for m in layers]
    for m in layers:
        m.route = route
    try:
        yield
    finally:
        for m, r in zip(layers, before):
            m.route = r


__all__ = ["DualBatchNorm", "add_aux_bn", "bn_route", "dual_bn_layers", "remove_aux_bn"]
