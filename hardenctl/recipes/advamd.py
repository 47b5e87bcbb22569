"""AdvAmd — adversarial amendment: adversarial samples used to raise *clean* accuracy
(Yu, Chen, Gan, "Adversarial Amendment is the Only Force Capable of Transforming an Enemy into a
Friend", IJCAI 2023, arXiv 2305.10766).

Why: adversarial training usually costs clean accuracy because benign and adversarial samples
are distributed differently yet share one set of normalisation statistics and one "learning
ratio". The paper amends that with three parts — mediate samples, auxiliary batch norm and the
AdvAmd loss — so that adversarial samples improve a pretrained model instead of hurting it.

Only the abstract is known and there is no official code, so the formulas below are **our
design [ours]** (RECIPES.md, "advamd"), every knob in ``recipes/advamd.yaml``:

* x_adv: the engine's training PGD with a small budget (ε = 2/255, 5 steps of 1/255), run
  through the auxiliary BN (:meth:`AdvAmd.attack_context`);
* mediate samples x_m(λ_k) = x + λ_k·(x_adv − x) for the ``levels`` λ_k (default 1/3, 2/3):
  points between the two distributions, so the step from benign to adversarial is not abrupt;
* auxiliary BN (:mod:`hardenctl.aux_bn`, AdvProp-style): benign batches use the main BN,
  mediate and adversarial batches (one concatenated pass) the auxiliary twin; export drops the
  twins, so the saved model is the input architecture with the input's keys;
* loss L = CE(x) + Σ_k w_mediate·mean_i(vᵢ·CE(x_m(λ_k)ᵢ)) + w_adv·mean_i(vᵢ·CE(x_advᵢ)) with a
  per-sample learning ratio vᵢ (detached) from the attack's effect: ``p_true`` vᵢ = p_y(x_advᵢ)
  (samples the attack flips easily teach less), ``loss_gap`` vᵢ = exp(−max(0, CE(x_advᵢ) − CE(xᵢ))),
  or ``none`` vᵢ = 1. With both weights 0 the loss is exactly a clean fine-tune's CE(x);
* the saved epoch is the best by held-out *clean* accuracy (``selection = "clean"``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.aux_bn import add_aux_bn, bn_route, remove_aux_bn
from .base import Recipe, RecipeConfig

VULNERABILITY = ("p_true", "loss_gap", "none")


def mediate_samples(x: Tensor, x_adv: Tensor, level: float) -> Tensor:
    """x + λ·(x_adv − x): a point on the segment from the benign to the adversarial image."""
    return x + level * (x_adv - x)


def learning_ratio(rule: str, logits_adv: Tensor, logits: Tensor, y: Tensor) -> Tensor:
    """Per-sample weight vᵢ ∈ [0, 1] of the amendment terms (detached: it weighs, it is not trained)."""
    logits_adv, logits = logits_adv.detach().float(), logits.detach().float()
    if rule == "p_true":
        return F.softmax(logits_adv, dim=1).gather(1, y[:, None]).squeeze(1)
    if rule == "loss_gap":
        gap = F.cross_entropy(logits_adv, y, reduction="none") - F.cross_entropy(logits, y, reduction="none")
        return torch.exp(-gap.clamp(min=0))
    if rule == "none":
        return torch.ones_like(y, dtype=logits.dtype)
    raise ValueError(f"unknown learning-ratio rule {rule!r}")


@dataclass(frozen=True)
class AdvAmdConfig(RecipeConfig):
    levels: tuple[float, ...] = field(default=(1 / 3, 2 / 3), metadata={"min": 0.0, "max": 1.0})
    w_mediate: float = field(default=0.5, metadata={"min": 0.0})
    w_adv: float = field(default=0.5, metadata={"min": 0.0})
    vulnerability: str = field(default="p_true", metadata={"choices": VULNERABILITY})
    aux_bn: bool = True


class AdvAmd(Recipe):
    name = "advamd"
    paper = "Yu, Chen, Gan, Adversarial Amendment ... Transforming an Enemy into a Friend, IJCAI 2023"
    improves = "clean accuracy of a pretrained model: fine-tune with mediate samples, auxiliary BN and the AdvAmd loss"
    interpretation = (
        "ours (only the abstract is known): mediate samples x + λ_k·(x_adv − x); AdvProp-style auxiliary BN for "
        "mediate/adversarial batches, dropped on export; L = CE(x) + Σ_k w_mediate·mean(v·CE(x_m,k)) + "
        "w_adv·mean(v·CE(x_adv)), learning ratio v from the attack (p_true | loss_gap | none); "
        "best epoch by held-out clean accuracy"
    )
    selection = "clean"
    Config = AdvAmdConfig

    def __init__(self, config: RecipeConfig | None = None, source: str | None = None):
        super().__init__(config, source)
        self.aux_bn_layers = 0

    def amends(self) -> bool:
        """Whether any amendment term is on (both weights 0 is a clean fine-tune: no attack pass is used)."""
        c = self.config
        return c.w_adv > 0 or (c.w_mediate > 0 and len(c.levels) > 0)

    def prepare(self, model: nn.Module, seed: int = 0) -> nn.Module:
        """Give every BatchNorm an auxiliary twin (none for BN-free models, which then share one normalisation).

        No twins when no amendment term is on: they would get no gradient, which DDP refuses. The twins copy
        their main BN, so nothing is drawn and ``seed`` is unused.
        """
        self.aux_bn_layers = add_aux_bn(model) if self.config.aux_bn and self.amends() else 0
        return model

    def export(self, model: nn.Module) -> nn.Module:
        """The main-BN model: the input's architecture and state-dict keys."""
        return remove_aux_bn(model)

    def attack_context(self, model: nn.Module) -> contextlib.AbstractContextManager:
        """The training attack sees the auxiliary BN, as the adversarial batches will in the loss."""
        return bn_route(model, "aux")

    def report_extra(self, before: nn.Module, after: nn.Module) -> dict[str, Any]:
        c = self.config
        if not self.amends():
            bn = "no amendment term (w_mediate and w_adv are 0): a clean fine-tune, auxiliary BN unused"
        elif not c.aux_bn:
            bn = "auxiliary BN off (aux_bn: false): every batch went through the model's own BN"
        elif self.aux_bn_layers:
            bn = f"auxiliary BN on {self.aux_bn_layers} BatchNorm layers (dropped from the saved model)"
        else:
            bn = (
                "auxiliary BN does not apply: the model has no BatchNorm layers (e.g. LayerNorm); "
                "the rest of AdvAmd ran"
            )
        return {
            "advamd": {
                "aux_bn_layers": self.aux_bn_layers,
                "learning_ratio": c.vulnerability,
                "levels": list(c.levels),
                "summary": f"AdvAmd: {bn}; mediate levels {[round(v, 4) for v in c.levels]}, "
                f"learning ratio {c.vulnerability}",
            }
        }

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, x_adv: Tensor) -> Tensor:
        c = self.config
        logits = model(x)
        total = F.cross_entropy(logits.float(), y, label_smoothing=c.label_smoothing)
        if not self.amends():
            return total  # exactly a clean fine-tune step
        levels = c.levels if c.w_mediate > 0 else ()
        batch = torch.cat([mediate_samples(x, x_adv, level) for level in levels] + [x_adv])
        with bn_route(model, "aux"):
            *mediate_logits, adv_logits = model(batch).float().split(len(x))
        ratio = learning_ratio(c.vulnerability, adv_logits, logits, y)
        for chunk in mediate_logits:
            total = (
                total
                + c.w_mediate
                * (ratio * F.cross_entropy(chunk, y, reduction="none", label_smoothing=c.label_smoothing)).mean()
            )
        return (
            total
            + c.w_adv
            * (ratio * F.cross_entropy(adv_logits, y, reduction="none", label_smoothing=c.label_smoothing)).mean()
        )


__all__ = ["AdvAmd", "AdvAmdConfig", "VULNERABILITY", "learning_ratio", "mediate_samples"]
