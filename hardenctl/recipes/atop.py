"""AToP — Adversarial Training on Purification (Lin, Li, Zhang, Tanaka, Zhao, ICLR 2024; code github.com/glin2022/atop).

Why: the classifier f may not be retrained (it is certified, shared, or too expensive), yet it should
resist attacks. AToP puts a random transform t and a purifier g in front of it and trains only g: t
destroys the perturbation, g restores the image, and fine-tuning g with a classification loss through the
frozen f teaches it to restore what f needs. The shipped model is the composite f(g(t(x)))
(:class:`hardenctl.purifier.PurifiedClassifier`), evaluated end to end with EOT.

One run, two phases (``epochs`` = ``pretrain_epochs`` + ``finetune_epochs``, set by the recipe):

* pre-training [ours: the paper starts from a pretrained DeepFillv2, we cannot download one]:
  L = |g(t(x)) − x|₁ (mean over pixels), Adam at ``lr``;
* fine-tuning [code]: x' = FGSM (or PGD) at ε on the classifier alone, one draw of t shared by x and x'
  (as the official notebook), and
  L = |g(t(x)) − x|₁ + λ·CE(f(g(t(x'))), y)                    with ``recon_target: clean`` (default), or
  L = |g(t(x')) − x'|₁ + λ·CE(f(g(t(x'))), y)                  with ``recon_target: adversarial`` (the notebook
  that overwrites the clean batch with the adversarial one); λ = ``lambda_cls`` after ``warmup_epochs`` fine-tuning
  epochs, 0 before; Adam at ``finetune_lr`` (the engine's lr × ``lr_factor``). With λ = 0 and a clean target
  the loss is exactly the pre-training loss.

The engine's own training attack is off (``attack_steps: 0``). Choosing the saved epoch: ``select: best`` picks
only among the fine-tuning epochs after the warm-up (:meth:`Atop.selectable_epochs`), so a purifier that was
never AToP-fine-tuned cannot ship; the per-epoch monitor that scores them runs PGD on the composite in eval
mode with EOT over ``monitor_eot`` draws of t (gradients averaged; robust only if correct on every draw),
because one draw rewards whichever epoch's randomness happens to help. It picks the epoch; it is not the
reported robustness (the harden report's end-to-end evaluation is).
Deviations, named in ``interpretation``: our U-Net purifier and its pre-training; per-image masks (the code
draws one per batch); L1 on [0, 1] pixels of one output (the code sums two stages on [−1, 1]); Adam moments
carry over from pre-training into fine-tuning (the engine has one optimiser); no GAN term yet.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..attacks import FGSM, PGD
from ..errors import UserError
from ..models.purifier import TRANSFORMS, PurifiedClassifier, RandomTransform, TransformConfig, new_purifier
from .base import Recipe, RecipeConfig

BPDA_LABEL = "classifier-only attack (BPDA, optimistic)"


@dataclass(frozen=True)
class AtopConfig(RecipeConfig):
    # engine settings with AToP's defaults (recipes/atop.yaml documents each)
    epochs: int = field(default=0, metadata={"min": 0})  # derived: pretrain_epochs + finetune_epochs
    optimizer: str = field(default="adamw", metadata={"choices": ("sgd", "adamw")})
    lr: float = field(default=1e-3, metadata={"min": 0.0, "exclusive": True})
    adam_betas: tuple[float, ...] = field(default=(0.5, 0.999), metadata={"length": 2, "min": 0.0, "max": 1.0})
    weight_decay: float = field(default=0.0, metadata={"min": 0.0})
    schedule: str = field(default="constant", metadata={"choices": ("step", "cosine", "onecycle", "constant")})
    attack_steps: int = field(default=0, metadata={"min": 0})
    # AToP's own
    rt: str = field(default="rt2", metadata={"choices": TRANSFORMS})
    sigma: float = field(default=0.25, metadata={"min": 0.0, "max": 1.0})
    missing_rate: float = field(default=0.25, metadata={"min": 0.0, "max": 0.95})
    block: int = field(default=4, metadata={"min": 1})
    width: int = field(default=32, metadata={"min": 1})
    depth: int = field(default=2, metadata={"min": 0, "max": 6})
    pretrain_epochs: int = field(default=20, metadata={"min": 0})
    finetune_epochs: int = field(default=10, metadata={"min": 0})
    finetune_lr: float = field(default=1e-4, metadata={"min": 0.0, "exclusive": True})
    lambda_cls: float = field(default=0.05, metadata={"min": 0.0})
    finetune_attack: str = field(default="fgsm", metadata={"choices": ("fgsm", "pgd")})
    pgd_steps: int = field(default=10, metadata={"min": 1})
    recon_target: str = field(default="clean", metadata={"choices": ("clean", "adversarial")})
    gan_weight: float = field(default=0.0, metadata={"min": 0.0})
    monitor_eot: int = field(default=4, metadata={"min": 1})

    def __post_init__(self) -> None:
        where = "recipe atop"
        total = self.pretrain_epochs + self.finetune_epochs
        if self.epochs not in (0, total):
            raise UserError(
                f"{where}: epochs={self.epochs} cannot be set, atop derives it (pretrain_epochs + finetune_epochs = "
                f"{total})",
                "drop --epochs / epochs and set pretrain_epochs and finetune_epochs instead",
            )
        if total == 0:
            raise UserError(
                f"{where}: pretrain_epochs and finetune_epochs are both 0",
                "set e.g. --set pretrain_epochs=20 --set finetune_epochs=10",
            )
        object.__setattr__(self, "epochs", total)
        if self.attack_steps:
            raise UserError(
                f"{where}: attack_steps={self.attack_steps}, but atop runs its own attack on the classifier alone",
                "drop attack_steps (it must stay 0) and choose finetune_attack: fgsm or pgd",
            )
        if self.attack != "pgd":
            raise UserError(
                f"{where}: attack={self.attack}, but the engine's training attack is off for atop (it attacks the "
                "classifier alone itself)",
                "drop attack and choose finetune_attack: fgsm or pgd",
            )
        if self.reinit:
            raise UserError(
                f"{where}: reinit=true, but atop keeps the input classifier frozen", "drop --reinit / reinit"
            )
        if self.gan_weight > 0:
            raise UserError(
                f"{where}: gan_weight={self.gan_weight:g} is not implemented (the optional GAN term needs a "
                "discriminator "
                "with its own optimiser)",
                "set gan_weight: 0 (the L1 reconstruction and classification terms remain)",
            )
        if self.warmup_epochs != int(self.warmup_epochs):
            raise UserError(
                f"{where}: warmup_epochs={self.warmup_epochs:g} is not a whole number of fine-tuning epochs",
                "give warmup_epochs as an integer, e.g. 0 or 2",
            )
        if self.finetune_epochs and self.warmup_epochs >= self.finetune_epochs:
            raise UserError(
                f"{where}: warmup_epochs={int(self.warmup_epochs)} leaves none of the {self.finetune_epochs} "
                "fine-tuning "
                "epochs with the classification term",
                f"set warmup_epochs below {self.finetune_epochs}",
            )
        self.transform()  # rt/sigma/missing_rate/block checked together

    @property
    def lr_warmup_epochs(self) -> float:
        """0: atop's ``warmup_epochs`` delays the CE term, it does not ramp up the learning rate."""
        return 0.0

    def transform(self) -> TransformConfig:
        return TransformConfig(self.rt, self.sigma, self.missing_rate, self.block)


class Atop(Recipe):
    name = "atop"
    paper = "Lin et al., Adversarial Training on Purification (AToP), ICLR 2024"
    improves = (
        "robustness of a frozen classifier: random transform + purifier fine-tuned through it (classifier unchanged)"
    )
    interpretation = (
        "our small U-Net purifier pre-trained with L1 on the user's data (the paper fine-tunes a pretrained "
        "DeepFillv2 GAN); per-image masks; L1 on [0,1] pixels of one output; Adam moments carried from "
        "pre-training into fine-tuning; no GAN term; rt1/rt3 are our reading of the official notebooks"
    )
    Config = AtopConfig

    def __init__(self, config: RecipeConfig | None = None, source: str | None = None):
        super().__init__(config, source)
        self.epoch = 0  # the engine calls begin_epoch; direct callers of loss() start in pre-training

    # -- phases ---------------------------------------------------------------------------------
    def begin_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def finetuning(self, epoch: int | None = None) -> bool:
        return (self.epoch if epoch is None else epoch) >= self.config.pretrain_epochs

    def cls_weight(self, epoch: int | None = None) -> float:
        """λ of an epoch: 0 in pre-training and the fine-tuning warm-up, ``lambda_cls`` after."""
        epoch = self.epoch if epoch is None else epoch
        c = self.config
        return c.lambda_cls if epoch >= c.pretrain_epochs + int(c.warmup_epochs) else 0.0

    def lr_factor(self, epoch: int) -> float:
        c = self.config
        return c.finetune_lr / c.lr if self.finetuning(epoch) else 1.0

    # -- choosing the saved epoch ---------------------------------------------------------------
    def selectable_epochs(self) -> tuple[range, str]:
        """The fine-tuning epochs after the warm-up (1-based): an earlier one was never trained with the AToP loss."""
        c = self.config
        if c.finetune_epochs == 0:
            return range(1, c.epochs + 1), "every epoch: finetune_epochs is 0, a pre-training-only run"
        first = c.pretrain_epochs + int(c.warmup_epochs) + 1
        excluded = "pre-training and warm-up" if c.warmup_epochs else "pre-training"
        return range(first, c.epochs + 1), f"AToP fine-tuning epochs only; {excluded} epochs excluded"

    def monitor_eot(self) -> int:
        """The composite is randomised: the monitor averages PGD gradients and scores over ``monitor_eot`` draws of
        t."""
        return self.config.monitor_eot

    # -- model surgery --------------------------------------------------------------------------
    def prepare(self, model: nn.Module, seed: int = 0) -> PurifiedClassifier:
        """The composite around ``model`` (frozen, shared weights), with a fresh purifier initialised from ``seed``
        (the run's ``--seed``: the same seed gives the same purifier, another seed another)."""
        c = self.config
        if isinstance(model, PurifiedClassifier):
            raise UserError(
                "the input model already has an AToP purifier", "pass the bare classifier checkpoint to --recipe atop"
            )
        info = getattr(model, "info", None)
        if info is None or not hasattr(model, "model"):
            raise UserError(
                "atop needs a classifier loaded by hardenctl (pixels in [0, 1], normalisation inside)",
                "load it with hardenctl.load_model",
            )
        if info.input_size and c.block > min(info.input_size):
            raise UserError(
                f"recipe atop: block={c.block} is larger than the {info.input_size[0]}x{info.input_size[1]} images",
                f"set block to at most {min(info.input_size)} (e.g. 4 for 32x32 images, 2 for 8x8)",
            )
        purifier = new_purifier(info.in_chans, c.width, c.depth, seed=seed).to(next(model.parameters()).device)
        return PurifiedClassifier(model, purifier, RandomTransform(c.transform()))

    def export(self, model: nn.Module) -> nn.Module:
        return model

    # -- the loss -------------------------------------------------------------------------------
    def attack(self, composite: PurifiedClassifier, x: Tensor, y: Tensor) -> Tensor:
        """x' on the classifier alone (frozen, eval mode): FGSM, or PGD with a uniform random start."""
        c = self.config
        if c.finetune_attack == "pgd":
            attack = PGD(c.eps, "linf", steps=c.pgd_steps, alpha=c.attack_alpha)
        else:
            attack = FGSM(c.eps, "linf")
        return attack(composite.classifier_only(), x, y)

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, x_adv: Tensor) -> Tensor:
        """``x_adv`` is ignored (the engine's attack is off); ``model`` may be the DDP wrapper of the composite."""
        c = self.config
        composite = getattr(model, "module", model)
        if not isinstance(composite, PurifiedClassifier):
            raise TypeError("the atop recipe's loss needs the composite: call prepare(model) first")
        draw = composite.transform.draw(x)  # one draw of t for x and x', as the official notebook
        weight = self.cls_weight()
        adversarial_target = self.finetuning() and c.recon_target == "adversarial"
        if weight == 0 and not adversarial_target:  # pre-training, warm-up, or λ = 0: reconstruction only
            return F.l1_loss(model(x, draw, "purified").float(), x.float())
        x_prime = self.attack(composite, x, y)
        if adversarial_target:
            purified, logits = model(x_prime, draw, "both")
            recon = F.l1_loss(purified.float(), x_prime.float())
        else:
            recon = F.l1_loss(model(x, draw, "purified").float(), x.float())
            logits = model(x_prime, draw, "logits") if weight else None
        return (
            recon + weight * F.cross_entropy(logits.float(), y, label_smoothing=c.label_smoothing) if weight else recon
        )

    # -- the report -----------------------------------------------------------------------------
    def extra_evaluations(self, final: nn.Module) -> dict[str, dict[str, Any]]:
        """The saved composite once more, attacked through its classifier alone (BPDA): the optimistic number."""
        return {BPDA_LABEL: {"attack_model": final.classifier_only()}}

    def report_extra(self, before: nn.Module, after: nn.Module) -> dict[str, Any]:
        """Whether the classifier is bit-identical to the input's, and what the columns mean."""
        theirs = {**dict(before.model.named_parameters()), **dict(before.model.named_buffers())}
        ours = {**dict(after.model.named_parameters()), **dict(after.model.named_buffers())}
        identical = theirs.keys() == ours.keys() and all(torch.equal(theirs[k].cpu(), ours[k].cpu()) for k in theirs)
        purifier = sum(p.numel() for p in after.purifier.parameters())
        return {
            "atop": {
                "classifier_bit_identical": identical,
                "purifier_parameters": purifier,
                "transform": self.config.transform().to_dict(),
                "summary": (
                    "AToP: 'input model' is the bare classifier, 'hardened' the composite f(g(t(x))) attacked end to "
                    "end "
                    f"(with EOT when randomised); the '{BPDA_LABEL}' column attacks the classifier alone and passes "
                    "the "
                    f"points through the pipeline, which overstates robustness; classifier weights and buffers "
                    f"{'bit-identical to the input' if identical else 'CHANGED (a bug: please report it)'}; "
                    f"purifier {purifier:,} parameters"
                ),
            }
        }


__all__ = ["BPDA_LABEL", "Atop", "AtopConfig"]
