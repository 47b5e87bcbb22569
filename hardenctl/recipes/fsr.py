"""FSR — Feature Separation and Recalibration (Kim, Cho, Jung, Yoon, CVPR 2023; code github.com/wkim97/FSR).

Why: adversarial training learns to ignore the feature units an attack corrupts, though they still
carry cues for the right class. FSR inserts a module after a feature stage that separates the
feature map into a robust part f⁺ and a non-robust part f⁻ with a learned soft mask, then
recalibrates f⁻ instead of discarding it (:mod:`hardenctl.fsr_module`). It stacks on a base
adversarial training method and claims up to +8.57 points of robust accuracy over it.

Faithful to the official ``train.py``:

* training attack: eval mode (deterministic mask), PGD-10 on CE, uniform random start, α = 2/255,
  ε = 8/255, projected to the ball and [0, 1] (the engine's training PGD);
* train mode (stochastic mask), one pass on x'; y' = the strongest wrong class of f(x') (its top-1
  if wrong, else its top-2); with h the shared auxiliary head after global average pooling,
  L = CE(f(x'), y) + λ_sep·[CE(h(f⁺), y) + CE(h(f⁻), y')] + λ_rec·CE(h(f̃⁻), y), λ_sep = λ_rec = 1;
  with several modules each bracket is averaged over the modules, as the official loop does.

Our design [ours], configurable in ``recipes/fsr.yaml``:

* ``base: trades | mart`` replaces the first term by that recipe's loss (TRADES: CE(f(x)) + β·KL,
  attack on the KL; MART: boosted CE + weighted KL, from an extra train-mode pass on x); the FSR
  terms always use the pass on x'. ``base: pgd-at`` is the official method;
* ``stages``: any timm ``feature_info`` stage(s); default the last one (the official code places one
  module after the last stage of ResNet-18/WRN-34-10);
* ``zero_init_recalibration`` (default off, as the official code): zero R's last conv so a
  pretrained backbone's outputs are unchanged at the start.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UserError
from ..models.fsr import LAST, FSRModule, FSRParts, fsr_metadata, fsr_modules, insert_fsr
from .base import LossFn, Recipe, RecipeConfig
from .mart import mart_loss, strongest_wrong_class
from .trades import base_attack_loss, trades_loss

BASES = ("pgd-at", "trades", "mart")


def parse_stages(value: Any, where: str) -> tuple[str, ...]:
    """``last``, ``layer3,layer4`` or ``[layer3, layer4]`` → a tuple of names (checked against the model later)."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(s, str) for s in items):
        raise UserError(
            f"{where}: stages={value!r} is not a list of stage names", "give e.g. stages: [layer4] or stages: last"
        )
    names = tuple(s.strip() for s in items)
    if not names or any(not s or any(c.isspace() for c in s) for s in names):
        raise UserError(
            f"{where}: stages={value!r} has an empty or malformed name", "give e.g. stages: [layer4] or stages: last"
        )
    return names


@dataclass(frozen=True)
class FsrConfig(RecipeConfig):
    stages: tuple[str, ...] = field(default=(LAST,), metadata={"parse": parse_stages})
    tau: float = field(default=0.1, metadata={"min": 0.0, "exclusive": True})
    lambda_sep: float = field(default=1.0, metadata={"min": 0.0})
    lambda_rec: float = field(default=1.0, metadata={"min": 0.0})
    base: str = field(default="pgd-at", metadata={"choices": BASES})
    beta: float = field(default=6.0, metadata={"min": 0.0})
    hidden: int = field(default=64, metadata={"min": 1})
    zero_init_recalibration: bool = False


def fsr_terms(modules: list[FSRModule], parts: list[FSRParts], y: Tensor, y_wrong: Tensor) -> tuple[Tensor, Tensor]:
    """(separation, recalibration) losses, each averaged over the modules:
    CE(h(f⁺), y) + CE(h(f⁻), y') and CE(h(f̃⁻), y)."""
    sep = rec = 0.0
    for module, p in zip(modules, parts):
        sep = sep + (
            F.cross_entropy(module.aux_logits(p.robust).float(), y)
            + F.cross_entropy(module.aux_logits(p.non_robust).float(), y_wrong)
        )
        rec = rec + F.cross_entropy(module.aux_logits(p.recalibrated).float(), y)
    return sep / len(modules), rec / len(modules)


class Fsr(Recipe):
    name = "fsr"
    paper = "Kim et al., Feature Separation and Recalibration for Adversarial Robustness, CVPR 2023"
    improves = "robust accuracy over its base AT method: separates and recalibrates non-robust feature units"
    interpretation = (
        "FSR on timm stages from feature_info (default: the last); base trades/mart replace the CE(f(x'), y) "
        "term by that recipe's loss (the official code has only pgd-at); optional zero init of R's last conv"
    )
    Config = FsrConfig

    def prepare(self, model: nn.Module, seed: int = 0) -> nn.Module:
        """Insert the modules (in place), initialised from ``seed`` (the run's ``--seed``), and record them in
        ``model.info.metadata["fsr"]`` for saving."""
        c = self.config
        net = getattr(model, "model", model)
        info = getattr(model, "info", None)
        num_classes = info.num_classes if info is not None else getattr(net, "num_classes", None)
        if not num_classes:
            raise UserError("cannot tell how many classes the model has", "load it with hardenctl.load_model")
        insert_fsr(
            net,
            c.stages,
            int(num_classes),
            c.hidden,
            c.tau,
            zero_init_recalibration=c.zero_init_recalibration,
            seed=seed,
        )
        if info is not None:
            info.metadata["fsr"] = fsr_metadata(net)  # in place: the engine saves this info's metadata
        return model

    def attack_loss(self, model: nn.Module, x: Tensor, y: Tensor) -> LossFn:
        return base_attack_loss(self.config.base, model, x, y)

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, x_adv: Tensor) -> Tensor:
        c = self.config
        modules = fsr_modules(model)
        if not modules:
            raise RuntimeError("the fsr recipe's loss needs a model with FSR modules: call prepare(model) first")
        logits = model(x) if c.base in ("trades", "mart") else None
        for module in modules:
            module.pop_parts()
        logits_adv = model(x_adv)
        parts = [module.pop_parts() for module in modules]
        if any(p is None for p in parts):
            raise RuntimeError("FSR modules kept no features: the loss must run with the model in train mode")
        if c.base == "trades":
            total = trades_loss(logits, logits_adv, y, c.beta, c.label_smoothing)
        elif c.base == "mart":
            total = mart_loss(logits, logits_adv, y, c.beta, c.label_smoothing)
        else:
            total = F.cross_entropy(logits_adv.float(), y, label_smoothing=c.label_smoothing)
        if c.lambda_sep == 0 and c.lambda_rec == 0:
            return total
        sep, rec = fsr_terms(modules, parts, y, strongest_wrong_class(logits_adv.detach(), y))
        return total + c.lambda_sep * sep + c.lambda_rec * rec


__all__ = ["BASES", "Fsr", "FsrConfig", "fsr_terms", "parse_stages"]
