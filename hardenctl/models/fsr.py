"""FSR's feature separation and recalibration module, and inserting it into a timm network.

Why (Kim, Cho, Jung, Yoon, "Feature Separation and Recalibration for Adversarial Robustness",
CVPR 2023; code github.com/wkim97/FSR): adversarial training discards the feature units that an
attack corrupts, though they still hold useful cues. FSR splits a feature map f into a robust
part f⁺ and a non-robust part f⁻ with a learned soft mask, and recalibrates f⁻ instead of dropping
it; an auxiliary head trains the split (see :mod:`hardenctl.recipes.fsr` for the loss).

The module on f (C×H×W), as in the official ``models/resnet_fsr.py`` and ``gumbel_sigmoid.py``:

* separation net S and recalibration net R, each Conv3×3(C→h, no bias)–BN–ReLU–Conv3×3(h→h, no bias)–
  BN–ReLU–Conv3×3(h→C, no bias), h = 64;
* s = sigmoid(S(f)); mask m = Gumbel-sigmoid(s, τ = 0.1): in training
  m = σ((log s − log(1−s) + g₁ − g₂)/τ) with g₁, g₂ ~ Gumbel(0, 1) per element; in ``eval()`` the
  noise is dropped, m = s^{1/τ} / (s^{1/τ} + (1−s)^{1/τ}). The mask stays soft;
* f⁺ = m⊙f, f⁻ = (1−m)⊙f, recalibrated f̃⁻ = f⁻ + R(f⁻)⊙(1−m); the module outputs f⁺ + f̃⁻;
* one auxiliary head h = Linear(C, classes) after global average pooling, shared by f⁺, f⁻ and f̃⁻.

One difference, exact in value away from saturation: the official code computes s, then log(s + 1e-8)
and log(1 − s + 1e-8) and divides by τ + 1e-8; we use log s − log(1−s) = S(f) directly (the same mask,
without the guards, numerically stable when s rounds to 0 or 1).

Surgery: :func:`insert_fsr` replaces the stage module ``m`` at a name from timm's ``feature_info``
(``layer4``, ``stages.3``, ``blocks.4`` …) by :class:`FSRStage` (``fsr(m(x))``), so the network's
``forward`` still returns logits, the state_dict keys are deterministic (``layer4.stage.*``,
``layer4.fsr.*``) and the metadata from :func:`fsr_metadata` rebuilds it (:func:`restore_fsr`,
called by :func:`hardenctl.models.load_model`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import torch
from torch import Tensor, nn

from ..errors import UserError

FSR_FORMAT = 1  # version of the "fsr" metadata block
LAST = "last"  # the stage name that means "the last feature stage"


# ---------------------------------------------------------------------------------------------
# the module
# ---------------------------------------------------------------------------------------------
def gumbel_sigmoid_mask(logits: Tensor, tau: float, stochastic: bool) -> Tensor:
    """Soft mask from S's output (the logit of s): σ((logit + g₁ − g₂)/τ), noise only when ``stochastic``.

    Without noise this is s^{1/τ} / (s^{1/τ} + (1−s)^{1/τ}) with s = σ(logit). Computed in float32.

    Args:
        logits: S's output.
        tau: the temperature τ.
        stochastic: add the Gumbel noise (training) or not (evaluation).
    """
    logits = logits.float()
    if stochastic:
        tiny = torch.finfo(torch.float32).tiny
        u1 = torch.rand_like(logits).clamp_(min=tiny)
        u2 = torch.rand_like(logits).clamp_(min=tiny)
        logits = logits - torch.log(-torch.log(u1)) + torch.log(-torch.log(u2))  # + g₁ − g₂
    return torch.sigmoid(logits / tau)


def _conv_net(channels: int, hidden: int) -> nn.Sequential:
    """Conv3×3(C→h)–BN–ReLU–Conv3×3(h→h)–BN–ReLU–Conv3×3(h→C), no conv biases."""
    return nn.Sequential(
        nn.Conv2d(channels, hidden, 3, padding=1, bias=False),
        nn.BatchNorm2d(hidden),
        nn.ReLU(),
        nn.Conv2d(hidden, hidden, 3, padding=1, bias=False),
        nn.BatchNorm2d(hidden),
        nn.ReLU(),
        nn.Conv2d(hidden, channels, 3, padding=1, bias=False),
    )


@dataclass
class FSRParts:
    """The pieces of one FSR forward pass that the training loss needs."""

    robust: Tensor  # f⁺ = m⊙f
    non_robust: Tensor  # f⁻ = (1−m)⊙f
    recalibrated: Tensor  # f̃⁻ = f⁻ + R(f⁻)⊙(1−m)
    mask: Tensor  # m

    @property
    def output(self) -> Tensor:
        return self.robust + self.recalibrated


class FSRModule(nn.Module):
    """Feature separation (S + Gumbel-sigmoid mask), recalibration (R) and the shared auxiliary head.

    ``forward(f)`` returns f⁺ + f̃⁻ (same shape as f). In training mode it also keeps that pass's
    :class:`FSRParts` for the loss (:meth:`pop_parts`); in ``eval()`` the mask is deterministic and
    nothing is kept.
    """

    def __init__(self, channels: int, num_classes: int, hidden: int = 64, tau: float = 0.1):
        super().__init__()
        if tau <= 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        self.channels, self.num_classes, self.hidden, self.tau = (
            int(channels),
            int(num_classes),
            int(hidden),
            float(tau),
        )
        self.separation = _conv_net(self.channels, self.hidden)
        self.recalibration = _conv_net(self.channels, self.hidden)
        self.head = nn.Linear(self.channels, self.num_classes)
        self._parts: FSRParts | None = None

    def extra_repr(self) -> str:
        return f"channels={self.channels}, num_classes={self.num_classes}, hidden={self.hidden}, tau={self.tau}"

    def mask(self, f: Tensor) -> Tensor:
        """m for features ``f`` (stochastic in training mode, deterministic in eval mode)."""
        return gumbel_sigmoid_mask(self.separation(f), self.tau, stochastic=self.training).to(f.dtype)

    def separate(self, f: Tensor) -> FSRParts:
        """f⁺, f⁻, f̃⁻ and m for features ``f`` (N×C×H×W)."""
        if f.dim() != 4 or f.shape[1] != self.channels:
            raise UserError(
                f"an FSR module built for {self.channels}-channel N×C×H×W features received shape {tuple(f.shape)}",
                "insert FSR at a convolutional stage whose output is N×C×H×W (see the valid stages of this model)",
            )
        m = self.mask(f)
        robust = m * f
        non_robust = (1 - m) * f
        recalibrated = non_robust + self.recalibration(non_robust) * (1 - m)
        return FSRParts(robust, non_robust, recalibrated, m)

    def forward(self, f: Tensor) -> Tensor:
        parts = self.separate(f)
        self._parts = parts if self.training else None
        return parts.output

    def aux_logits(self, feature: Tensor) -> Tensor:
        """h(GAP(feature)): the shared auxiliary head on one of f⁺, f⁻, f̃⁻."""
        return self.head(feature.mean(dim=(2, 3)))

    def pop_parts(self) -> FSRParts | None:
        """The parts of the last training-mode forward pass (then forgotten), or None."""
        parts, self._parts = self._parts, None
        return parts

    def __getstate__(self) -> dict[str, Any]:
        # copy.deepcopy/pickle must not try to copy a kept autograd graph
        state = dict(self.__dict__)
        state["_parts"] = None
        return state


class FSRStage(nn.Module):
    """A network stage followed by an FSR module: ``fsr(stage(x))``."""

    def __init__(self, stage: nn.Module, fsr: FSRModule):
        super().__init__()
        self.stage = stage
        self.fsr = fsr

    def forward(self, *args: Any, **kwargs: Any) -> Tensor:
        return self.fsr(self.stage(*args, **kwargs))


# ---------------------------------------------------------------------------------------------
# finding stages and inserting modules
# ---------------------------------------------------------------------------------------------
def _feature_dicts(net: nn.Module) -> list[dict[str, Any]]:
    info = getattr(net, "feature_info", None)
    if info is None:
        return []
    if hasattr(info, "get_dicts"):
        info = info.get_dicts()
    return [d for d in info if isinstance(d, Mapping) and isinstance(d.get("module"), str) and d.get("module")]


def fsr_stages(net: nn.Module) -> list[str]:
    """Names of the stages FSR can follow: the modules of timm's ``feature_info``, in order.

    Args:
        net: a timm network.
    """
    names: list[str] = []
    for d in _feature_dicts(net):
        if d["module"] not in names:
            names.append(d["module"])
    return names


def _stage_channels(net: nn.Module) -> dict[str, int]:
    return {d["module"]: int(d["num_chs"]) for d in _feature_dicts(net)}


def resolve_stages(net: nn.Module, stages: str | Iterable[str]) -> list[str]:
    """Stage names checked against ``feature_info`` (``last`` → the last one), duplicates dropped, in network order.

    Args:
        net: a timm network.
        stages: stage names (or ``last``), one or several.
    """
    valid = fsr_stages(net)
    if not valid:
        raise UserError(
            f"{type(net).__name__} has no timm feature_info, so FSR cannot find its stages",
            "use a timm convolutional model (ResNet, ConvNeXt, EfficientNet, ...)",
        )
    wanted = [stages] if isinstance(stages, str) else list(stages)
    if not wanted:
        raise UserError("no FSR stage given", f"set stages to one or more of: {', '.join(valid)} (or {LAST})")
    names = [valid[-1] if name == LAST else name for name in wanted]
    unknown = [name for name in names if name not in valid]
    if unknown:
        raise UserError(
            f"unknown FSR stage{'s' if len(unknown) > 1 else ''} {', '.join(repr(n) for n in unknown)} "
            f"for {type(net).__name__}",
            f"valid stages: {', '.join(valid)} (or {LAST}: {valid[-1]})",
        )
    return [name for name in valid if name in names]


def fsr_modules(model: nn.Module) -> list[FSRModule]:
    """The FSR modules of ``model`` (any wrapper: ImageClassifier, DDP, the bare net), in order.

    Args:
        model: any model.
    """
    return [m for m in model.modules() if isinstance(m, FSRModule)]


def fsr_inserted(net: nn.Module) -> dict[str, FSRModule]:
    """Stage name → FSR module for every :class:`FSRStage` in ``net``.

    Args:
        net: a timm network.
    """
    return {name: m.fsr for name, m in net.named_modules() if isinstance(m, FSRStage)}


def _placement(net: nn.Module) -> tuple[torch.device, torch.dtype]:
    for tensor in [*net.parameters(), *net.buffers()]:
        if tensor.is_floating_point():
            return tensor.device, tensor.dtype
    return torch.device("cpu"), torch.float32


def insert_fsr(
    net: nn.Module,
    stages: str | Iterable[str],
    num_classes: int,
    hidden: int = 64,
    tau: float = 0.1,
    *,
    zero_init_recalibration: bool = False,
    seed: int = 0,
) -> list[str]:
    """Put an :class:`FSRModule` after each named stage of a timm ``net`` (in place); returns the stage names.

    A stage that already has one keeps it (its ``hidden``/``tau``/classes must then match). New modules
    are initialised in network order from one seeded generator, placed on the network's device and dtype,
    and follow its train/eval mode.

    Args:
        net: a timm network with ``feature_info``.
        stages: stage names (or ``last``), one or several.
        num_classes: classes of the network's head (the modules' auxiliary head has as many).
        hidden: channels of the hidden layers of S and R.
        tau: the Gumbel-sigmoid temperature.
        zero_init_recalibration: zero R's last conv, so the module starts as the identity (our option for
            pretrained backbones; the paper trains from scratch).
        seed: the harden run's ``--seed``: the same seed gives the same modules, another seed others, and the
            global RNG is left alone.
    """
    names = resolve_stages(net, stages)
    channels = _stage_channels(net)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        _insert_seeded(net, names, channels, num_classes, hidden, tau, zero_init_recalibration, _placement(net))
    return names


def _insert_seeded(
    net: nn.Module,
    names: list[str],
    channels: Mapping[str, int],
    num_classes: int,
    hidden: int,
    tau: float,
    zero_init_recalibration: bool,
    placement: tuple[torch.device, torch.dtype],
) -> None:
    """:func:`insert_fsr`'s loop, drawing new weights from the (already seeded) global RNG; new modules go to
    ``placement`` (the network's device and dtype)."""
    device, dtype = placement
    for name in names:
        current = net.get_submodule(name)
        if isinstance(current, FSRStage):
            have = current.fsr
            if (have.hidden, have.tau, have.num_classes) != (int(hidden), float(tau), int(num_classes)):
                raise UserError(
                    f"stage {name} already has an FSR module with hidden={have.hidden}, tau={have.tau:g}, "
                    f"{have.num_classes} classes",
                    f"pass --set hidden={have.hidden} --set tau={have.tau:g} to keep training it",
                )
            continue
        module = FSRModule(channels[name], num_classes, hidden, tau)
        if zero_init_recalibration:
            nn.init.zeros_(module.recalibration[-1].weight)
        module.to(device=device, dtype=dtype).train(net.training)
        parent_name, _, child = name.rpartition(".")
        parent = net.get_submodule(parent_name) if parent_name else net
        setattr(parent, child, FSRStage(current, module))


def fsr_metadata(net: nn.Module) -> dict[str, Any] | None:
    """What :func:`restore_fsr` needs to rebuild the inserted modules (saved under ``hardenctl.fsr``).

    Args:
        net: a timm network, FSR modules inserted or not.
    """
    inserted = fsr_inserted(net)
    if not inserted:
        return None
    first = next(iter(inserted.values()))
    return {
        "format": FSR_FORMAT,
        "stages": list(inserted),
        "channels": [m.channels for m in inserted.values()],
        "hidden": first.hidden,
        "tau": first.tau,
    }


def restore_fsr(net: nn.Module, meta: Any, num_classes: int) -> list[str]:
    """Insert the FSR modules a checkpoint's metadata names, before its weights are loaded.

    Args:
        net: the timm network the checkpoint's weights are for.
        meta: the checkpoint's ``hardenctl.fsr`` metadata (checked here).
        num_classes: classes of the network's head.
    """
    fix = "re-export the model with hardenctl harden --recipe fsr"
    if not isinstance(meta, Mapping):
        raise UserError(f"the checkpoint's FSR metadata is malformed ({meta!r:.80})", fix)
    stages, hidden, tau = meta.get("stages"), meta.get("hidden"), meta.get("tau")
    if (
        not isinstance(stages, list)
        or not stages
        or not all(isinstance(s, str) for s in stages)
        or isinstance(hidden, bool)
        or not isinstance(hidden, int)
        or hidden < 1
        or isinstance(tau, bool)
        or not isinstance(tau, (int, float))
        or not tau > 0
    ):
        raise UserError(
            f"the checkpoint's FSR metadata is malformed (stages={stages!r:.80}, hidden={hidden!r}, tau={tau!r})", fix
        )
    version = meta.get("format", FSR_FORMAT)
    if not isinstance(version, int) or version > FSR_FORMAT:
        raise UserError(
            f"the checkpoint's FSR metadata has format {version!r}, which this hardenctl cannot read",
            "upgrade hardenctl",
        )
    names = insert_fsr(net, stages, num_classes, hidden, float(tau))
    recorded = meta.get("channels")
    built = {name: m.channels for name, m in fsr_inserted(net).items()}
    expected = dict(zip(stages, recorded)) if isinstance(recorded, list) and len(recorded) == len(stages) else None
    if set(names) != set(stages) or (recorded is not None and expected != built):
        raise UserError(
            f"the checkpoint's FSR modules (stages {stages}, channels {recorded}) do not fit this network "
            f"({', '.join(f'{k}: {v} channels' for k, v in built.items())})",
            "check the checkpoint's architecture",
        )
    return names


__all__ = [
    "FSRModule",
    "FSRParts",
    "FSRStage",
    "LAST",
    "fsr_inserted",
    "fsr_metadata",
    "fsr_modules",
    "fsr_stages",
    "gumbel_sigmoid_mask",
    "insert_fsr",
    "resolve_stages",
    "restore_fsr",
]
