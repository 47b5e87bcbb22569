"""The one base class every recipe builds on, and the configuration every recipe shares.

Why: a recipe is an algorithm box from a paper — a loss, sometimes a change to the model —
and nothing else. The loop, the training attack, mixed precision, DDP, checkpoints and
reports are the engine's (:mod:`hardenctl.training`), written once. So a recipe states:

* ``Config``: a frozen dataclass of its parameters (the engine's shared ones below plus its
  own, e.g. MART's β), validated once from ``recipes/NAME.yaml`` merged with ``--set``;
* ``loss(model, x, y, x_adv)``: the training loss, called with the model in ``train()`` mode;
* optionally ``attack_loss(model, x, y)``: what the training attack maximises (default
  cross-entropy; TRADES maximises the KL to the clean prediction), called in ``eval()`` mode;
* optionally ``prepare(model, seed)`` / ``export(model)``: model surgery before training (new
  weights drawn from the run's ``--seed``) and undoing it (or folding it in) before the model is saved;
* optionally ``attack_context(model)`` (e.g. AdvAmd routes the attack through its auxiliary BN),
  ``begin_epoch(epoch)`` and ``lr_factor(epoch)`` (phased recipes such as AToP), and how the saved
  epoch is chosen: ``selection`` (which held-out accuracy: ``robust`` or ``clean``),
  ``selectable_epochs()`` (which epochs ``select: best`` may pick, e.g. AToP's fine-tuning ones) and
  ``monitor_eot()`` (EOT draws of the per-epoch monitor, for a randomised model);
* optionally, looked up by name: ``report_extra(input_model, hardened)`` (a section for the
  hardened report's ``extra``, e.g. Min-Max statistics) and ``extra_evaluations(hardened)``
  (label → EvalConfig overrides: more columns for the saved model, e.g. AToP's BPDA number).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping

from torch import Tensor, nn

from ..attacks.losses import cross_entropy
from ..errors import UserError

LossFn = Callable[[Tensor, Tensor], Tensor]  # (logits, y) -> per-sample loss to maximise


def _choices(*values: str) -> dict:
    return {"choices": values}


def _at_least(low: float) -> dict:
    return {"min": low}


AUTO = "auto"
# what lr: auto resolves to: the engine measures candidates on the held-out split (hardenctl.training.lr_sweep)
SWEEP = "sweep"
PROFILES = ("paper", "finetune", "custom")
ATTACKS = ("pgd", "fgsm-rs", "fgsm")
CO_GUARDS = ("stop", "lower", "warn", "off")
# timm families whose own training recipes use AdamW (transformers, hybrids, ConvNeXt and the MetaFormers): `optimizer:
# auto` picks AdamW when a "_"-separated part of the architecture name starts with one of these, SGD otherwise
ADAMW_ARCHS = (
    "vit",
    "deit",
    "beit",
    "eva",
    "cait",
    "xcit",
    "swin",
    "crossvit",
    "levit",
    "pvt",
    "twins",
    "coat",
    "tnt",
    "volo",
    "mvitv2",
    "maxvit",
    "maxxvit",
    "coatnet",
    "mobilevit",
    "efficientvit",
    "efficientformer",
    "fastvit",
    "davit",
    "focalnet",
    "gcvit",
    "nextvit",
    "hiera",
    "flexivit",
    "edgenext",
    "convnext",
    "convformer",
    "caformer",
    "poolformer",
)


def _parse_names(value: Any, where: str) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(s, str) and s.strip() for s in items):
        raise UserError(f"{where}: {value!r} is not a list of names", "give e.g. [vit, deit, swin]")
    return tuple(s.strip().lower() for s in items)


def _auto_or_number(
    key: str, low: float, exclusive: bool = False, words: tuple[str, ...] = (AUTO,)
) -> Callable[[Any, str], Any]:
    """A parser for a number that may also be ``auto`` (decided by the engine once the model is known) or another of
    ``words`` (``lr``: ``sweep``, what the engine resolves ``auto`` to until the sweep has measured)."""

    def parse(value: Any, where: str) -> Any:
        if isinstance(value, str) and value.strip().lower() in words:
            return value.strip().lower()
        number = _number(key, value, where)
        _check_range(key, number, {"min": low, "exclusive": exclusive}, where)
        return number

    return parse


@dataclass(frozen=True)
class RecipeConfig:
    """Settings the engine reads for every recipe (meanings and paper values: ``recipes/*.yaml``).

    A training recipe's file holds two profiles of them (``hardenctl.recipes.load_recipe``): ``paper``, the published
    from-scratch schedule, and ``finetune`` (the default), an adversarial fine-tuning of the input model whose
    ``optimizer``/``lr``/``weight_decay`` may be ``auto``, decided by the engine once the model is known
    (:mod:`hardenctl.training.resolve`). ``profile`` records which one a config came from.
    """

    # optimisation
    epochs: int = field(default=10, metadata=_at_least(1))
    batch_size: int = field(default=128, metadata=_at_least(1))
    optimizer: str = field(default="sgd", metadata=_choices("sgd", "adamw", AUTO))
    adamw_archs: tuple[str, ...] = field(default=ADAMW_ARCHS, metadata={"parse": _parse_names})
    lr: float = field(default=0.1, metadata={"parse": _auto_or_number("lr", 0.0, exclusive=True, words=(AUTO, SWEEP))})
    lr_sweep: tuple[float, ...] = field(default=(1.0, 3.0, 10.0), metadata={"min": 0.0, "exclusive": True})
    lr_sweep_budget: float = field(default=0.15, metadata={"min": 0.0, "max": 0.5, "exclusive": True})
    base_lr_sgd: float = field(default=0.01, metadata={"min": 0.0, "exclusive": True})
    base_lr_adamw: float = field(default=1e-4, metadata={"min": 0.0, "exclusive": True})
    momentum: float = field(default=0.9, metadata={"min": 0.0, "max": 1.0})
    nesterov: bool = False
    adam_betas: tuple[float, ...] = field(default=(0.9, 0.999), metadata={"length": 2, "min": 0.0, "max": 1.0})
    weight_decay: float = field(default=5e-4, metadata={"parse": _auto_or_number("weight_decay", 0.0)})
    weight_decay_sgd: float = field(default=5e-4, metadata=_at_least(0.0))
    weight_decay_adamw: float = field(default=0.05, metadata=_at_least(0.0))
    schedule: str = field(default="step", metadata=_choices("step", "cosine", "onecycle", "constant"))
    milestones: tuple[float, ...] = field(default=(0.5, 0.75), metadata={"min": 0.0, "max": 1.0, "may_be_empty": True})
    gamma: float = field(default=0.1, metadata={"min": 0.0, "max": 1.0})
    warmup_epochs: float = field(default=0.0, metadata=_at_least(0.0))
    grad_clip: float = field(default=0.0, metadata=_at_least(0.0))
    ema: float = field(default=0.0, metadata={"min": 0.0, "max": 1.0, "below": 1.0})
    ema_warmup: bool = True
    label_smoothing: float = field(default=0.0, metadata={"min": 0.0, "max": 1.0, "below": 1.0})
    # data
    augment: str = field(default="auto", metadata=_choices("auto", "timm", "crop-flip", "crop", "flip", "none"))
    crop_padding: int = field(default=4, metadata=_at_least(0))
    rrc_scale: tuple[float, ...] = field(default=(0.08, 1.0), metadata={"length": 2, "min": 0.0, "max": 1.0})
    auto_augment: str = ""  # timm auto-augment policy string (e.g. rand-m9-mstd0.5); "" for none
    holdout_fraction: float = field(default=0.1, metadata={"min": 0.0, "max": 0.5})
    # training attack (L∞, model in eval mode): PGD, or one FGSM step (Wong et al.) with or without a random start
    attack: str = field(default="pgd", metadata=_choices(*ATTACKS))
    eps: float = field(default=8 / 255, metadata={"min": 0.0, "max": 1.0})
    eps_warmup: float = field(default=0.0, metadata={"min": 0.0, "max": 1.0})
    attack_steps: int = field(default=10, metadata=_at_least(0))
    attack_alpha: float = field(default=2 / 255, metadata=_at_least(0.0))
    attack_start: str = field(default="uniform", metadata=_choices("uniform", "normal", "none"))
    attack_start_std: float = field(default=0.001, metadata=_at_least(0.0))
    fgsm_step: float = field(default=1.25, metadata={"min": 0.0, "exclusive": True})
    # the catastrophic-overfitting guard of the FGSM attacks
    co_guard: str = field(default="stop", metadata=_choices(*CO_GUARDS))
    co_drop: float = field(default=0.2, metadata={"min": 0.0, "max": 1.0})
    co_fgsm_drop: float = field(default=0.1, metadata={"min": 0.0, "max": 1.0})
    co_eps_factor: float = field(default=0.5, metadata={"min": 0.0, "max": 1.0, "exclusive": True})
    co_lr_factor: float = field(default=0.5, metadata={"min": 0.0, "max": 1.0, "exclusive": True})
    # per-epoch monitoring and the choice of the saved epoch
    monitor_n: int = field(default=512, metadata=_at_least(1))
    monitor_steps: int = field(default=10, metadata=_at_least(1))
    select: str = field(default="best", metadata=_choices("best", "last"))
    # which set of values this is: a file's profile (paper / finetune, see recipes/*.yaml) or custom (a flat file)
    profile: str = field(default="custom", metadata=_choices(*PROFILES))
    reinit: bool = False  # start from random weights (timm's init, drawn from --seed) instead of the input checkpoint

    def __post_init__(self) -> None:
        if self.reinit and self.profile == "finetune":
            raise UserError(
                "reinit (--reinit) starts from random weights, which the finetune profile is not made for",
                "pass --profile paper --reinit (the papers' from-scratch schedules)",
            )

    @property
    def resolved(self) -> bool:
        """Whether every ``auto`` value has been decided (:func:`hardenctl.training.resolve.resolve_config`)."""
        return AUTO not in (self.optimizer, self.lr, self.weight_decay)

    @property
    def lr_warmup_epochs(self) -> float:
        """Epochs of linear lr warm-up (a recipe may give ``warmup_epochs`` another meaning and override this)."""
        return self.warmup_epochs

    # -- construction and validation ---------------------------------------------------------
    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], where: str) -> "RecipeConfig":
        """Build from YAML/``--set`` values; any unknown key or bad value is a one-line UserError."""
        names = cls.keys()
        for key in values:
            if key not in names:
                raise UserError(f"{where}: unknown parameter {key!r}", f"valid parameters: {', '.join(names)}")
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        coerced = {key: _coerce(key, value, hints[key], fields[key].metadata, where) for key, value in values.items()}
        return cls(**coerced)

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML/JSON-friendly values (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def _number(key: str, value: Any, where: str) -> float:
    if isinstance(value, bool):
        raise UserError(f"{where}: {key}={value!r} is not a number", f"give {key} a number, e.g. {key}: 0.1")
    if isinstance(value, str) and "/" in value:
        num, _, den = value.partition("/")
        try:
            value = float(num) / float(den)
        except (ValueError, ZeroDivisionError):
            raise UserError(
                f"{where}: {key}={value!r} is not a number", f"give {key} a number or a fraction such as 8/255"
            ) from None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{where}: {key}={value!r} is not a number", f"give {key} a number, e.g. {key}: 0.1") from None
    if not math.isfinite(number):
        raise UserError(f"{where}: {key}={value!r} is not a finite number", f"give {key} a finite number")
    return number


def _out_of_range(key: str, number: float, bound: str, where: str) -> UserError:
    """``--lr -1 is out of range; --lr must be > 0`` for a command-line flag (``where`` is the flag itself), else
    ``recipe mart: beta=-1 is out of range; beta must be >= 0``."""
    if where.startswith("--") and " " not in where:  # a flag such as --lr, not "--set for recipe mart"
        return UserError(f"{where} {number:g} is out of range", f"{where} must be {bound}")
    return UserError(f"{where}: {key}={number:g} is out of range", f"{key} must be {bound}")


def _check_range(key: str, number: float, meta: Mapping[str, Any], where: str) -> None:
    low, high = meta.get("min"), meta.get("max")
    if low is not None and (number < low or (meta.get("exclusive") and number == low)):
        raise _out_of_range(key, number, f"> {low:g}" if meta.get("exclusive") else f">= {low:g}", where)
    if high is not None and number > high:
        raise _out_of_range(key, number, f"<= {high:g}", where)
    below = meta.get("below")
    if below is not None and number >= below:
        raise _out_of_range(key, number, f"< {below:g}", where)


def _coerce(key: str, value: Any, kind: Any, meta: Mapping[str, Any], where: str) -> Any:
    """Check one value against its field type and metadata (choices, range, length, or a custom ``parse``)."""
    if "parse" in meta:  # e.g. FSR stage names, protected class ids: a recipe-specific parser (value, where)
        return meta["parse"](value, where)
    if kind is bool:
        if not isinstance(value, bool):
            raise UserError(f"{where}: {key}={value!r} is not true/false", f"set {key}: true or {key}: false")
        return value
    if kind is str:
        choices = meta.get("choices")
        if choices and isinstance(value, str):
            value = value.strip().lower()  # a choice is a word: case-insensitive, as every word option is
        if not isinstance(value, str) or (choices and value not in choices):
            raise UserError(f"{where}: {key}={value!r} is not a valid choice", f"use one of {', '.join(choices or ())}")
        return value
    if kind is int:
        number = _number(key, value, where)
        if number != int(number):
            raise UserError(f"{where}: {key}={value!r} is not a whole number", f"give {key} an integer")
        _check_range(key, number, meta, where)
        return int(number)
    if kind is float:
        number = _number(key, value, where)
        _check_range(key, number, meta, where)
        return number
    if typing.get_origin(kind) is tuple:
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{where}: {key}={value!r} is not a list", f"give {key} a list, e.g. {key}: [0.5, 0.75]")
        if meta.get("length") is not None and len(value) != meta["length"]:
            raise UserError(f"{where}: {key} has {len(value)} values", f"give {key} exactly {meta['length']} values")
        if not value and not meta.get("may_be_empty"):  # e.g. lr_sweep=[]: nothing to measure, found now, not mid-run
            raise UserError(
                f"{where}: {key} is an empty list",
                f"give {key} at least one value, e.g. {key}: [1, 3, 10]"
                if key == "lr_sweep"
                else f"give {key} at least one value",
            )
        numbers = tuple(_number(key, item, where) for item in value)
        for number in numbers:
            _check_range(key, number, meta, where)
        return numbers
    raise TypeError(f"unsupported config field type {kind!r} for {key}")  # a bug, not a user error


class Recipe:
    """A training recipe: its config, its loss, and optional model surgery.

    Subclasses set ``name`` (the registry key), ``paper``, ``improves`` (one line each, shown by
    ``hardenctl recipes``), ``Config`` and implement :meth:`loss`. ``interpretation`` names any
    part that is our own design rather than the paper's (reported with every run).
    """

    name: ClassVar[str] = "recipe"
    paper: ClassVar[str] = ""
    improves: ClassVar[str] = ""
    interpretation: ClassVar[str | None] = None
    selection: ClassVar[str] = "robust"  # held-out accuracy that picks the saved epoch: "robust" or "clean"
    Config: ClassVar[type[RecipeConfig]] = RecipeConfig

    def __init__(self, config: RecipeConfig | None = None, source: str | None = None):
        self.config = config if config is not None else self.Config()
        self.source = source  # the YAML file the config came from, if any

    def prepare(self, model: nn.Module, seed: int = 0) -> nn.Module:
        """Model surgery before training (default: none); new weights are drawn from ``seed`` (the run's ``--seed``)."""
        return model

    def export(self, model: nn.Module) -> nn.Module:
        """The model to save and evaluate after training (default: as trained)."""
        return model

    def attack_context(self, model: nn.Module) -> contextlib.AbstractContextManager:
        """Entered around the training attack (default: nothing)."""
        return contextlib.nullcontext()

    def begin_epoch(self, epoch: int) -> None:
        """Called before every epoch (0-based), also after a resume (default: nothing)."""

    def lr_factor(self, epoch: int) -> float:
        """Multiplies the scheduled lr in this epoch (default 1)."""
        return 1.0

    def selectable_epochs(self) -> tuple[range, str]:
        """(1-based epochs ``select: best`` may pick, what they are); default every epoch.

        A phased recipe narrows it so that a model from an earlier phase (AToP's pre-training) cannot ship.
        """
        return range(1, self.config.epochs + 1), "every epoch"

    def monitor_eot(self) -> int:
        """EOT draws of the per-epoch monitor (PGD gradients averaged, robust only if correct on every draw).

        1 for a deterministic model; a randomised one (AToP's composite) needs more, or one lucky draw picks the epoch.
        """
        return 1

    def attack_loss(self, model: nn.Module, x: Tensor, y: Tensor) -> LossFn:
        """Per-sample loss the training attack maximises for this batch; model is in eval mode."""
        return cross_entropy

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, x_adv: Tensor) -> Tensor:
        """Scalar training loss for clean ``x``, labels ``y`` and training-attack output ``x_adv``."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"


__all__ = ["ADAMW_ARCHS", "ATTACKS", "AUTO", "SWEEP", "CO_GUARDS", "LossFn", "PROFILES", "Recipe", "RecipeConfig"]
