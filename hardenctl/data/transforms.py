"""timm's own eval and train transforms, configured by the model's :class:`DataConfig`, on [0, 1] pixels.

A robust accuracy describes the model that ships only if its images are prepared as timm prepares
them (resize by ``crop_pct``, centre crop, the model's interpolation), so we build timm's transforms
rather than our own. Normalisation is folded into the model, so every transform here stops at
pixels: uint8 0..255 (what datasets keep and hash) or float [0, 1] (what the attacks see).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Literal

import torch
from torch import Tensor
from torchvision.transforms import ConvertImageDtype

from ..errors import UserError

if TYPE_CHECKING:
    from ..models.data_config import DataConfig

Transform = Callable[[Any], Tensor]
TIMM_AUGMENT_MIN_SIZE = 64  # below this, RandomResizedCrop's zoom destroys too much of a tiny image


def _size(config: "DataConfig") -> tuple[int, int]:
    if config.input_size is None:
        raise UserError("the model's input size is unknown", "pass --input-size H,W")
    return int(config.input_size[0]), int(config.input_size[1])


def _fill_mean(config: "DataConfig", in_chans: int) -> tuple[float, ...]:
    """The mean timm pads and fills with ('border' crops, auto-augment): the model's own, one per channel."""
    mean = tuple(config.mean)
    return mean[:in_chans] if len(mean) >= in_chans else (mean[0],) * in_chans


def to_float() -> ConvertImageDtype:
    """uint8 CHW → float [0, 1]: torchvision's ConvertImageDtype, bit-identical to timm's ToTensor + Normalize(mean 0,
    std 1), which is why the normalisation can stay folded into the model."""
    return ConvertImageDtype(torch.float32)


class EvalTransform:
    """timm's eval transform (what ``validate.py`` applies to every photo, whatever its size), stopping at pixels.

    An undeclared ``crop_pct`` is the architecture's default, as timm resolves it. In-memory arrays already at
    the input size never get here (:func:`~.load.prepare_arrays` uses them as they are, RobustBench's convention).
    """

    def __init__(self, config: "DataConfig", in_chans: int, dtype: torch.dtype = torch.float32):
        from timm.data import create_transform

        self.size = _size(config)
        interpolation = (
            "bilinear" if config.interpolation == "random" else config.interpolation
        )  # eval is deterministic
        self.timm = create_transform(
            input_size=(in_chans, *self.size),
            is_training=False,
            interpolation=interpolation,
            crop_pct=config.effective_crop_pct,
            crop_mode=config.crop_mode,
            mean=_fill_mean(config, in_chans),
            std=(1.0,) * in_chans,
            normalize=False,
        )  # uint8 out; mean only fills borders
        self.finish = to_float() if dtype == torch.float32 else None
        self.description = (
            f"images resized with {interpolation} interpolation and crop_pct {config.effective_crop_pct:g} "
            f"({config.crop_mode} crop) to {self.size[0]}x{self.size[1]}"
        )

    def __call__(self, image: Any) -> Tensor:
        out = self.timm(image)
        return self.finish(out) if self.finish is not None else out

    def __repr__(self) -> str:
        return f"EvalTransform(timm={self.timm!r})"


def eval_transform(config: "DataConfig", in_chans: int, dtype: torch.dtype = torch.float32) -> EvalTransform:
    """PIL image → (in_chans, H, W) tensor as timm evaluates; float [0, 1] by default, or uint8.

    Args:
        config: the model's data config (input size, crop, interpolation, mean for borders).
        in_chans: channels of the output (1 or 3).
        dtype: ``torch.float32`` ([0, 1]) or ``torch.uint8`` (0..255).
    """
    if dtype not in (torch.float32, torch.uint8):
        raise ValueError(f"dtype must be float32 or uint8, got {dtype}")
    return EvalTransform(config, in_chans, dtype)


def train_transform(
    config: "DataConfig",
    in_chans: int,
    scale: tuple[float, float] = (0.08, 1.0),
    hflip: float = 0.5,
    auto_augment: str | None = None,
    color_jitter: float | None = None,
    dtype: torch.dtype = torch.float32,
) -> Transform:
    """timm's training transform (RandomResizedCrop at the input size, flip, optional auto-augment such as
    ``'rand-m9-mstd0.5'``) with the model's interpolation; float [0, 1] by default, or uint8.

    Colour jitter is off unless asked for: adversarial-training recipes specify crop and flip only.
    Its randomness comes from python ``random``, numpy and torch: see :class:`~.training.TrainDataset`.

    Args:
        config: the model's data config (input size, interpolation, mean for borders).
        in_chans: channels of the output (1 or 3).
        scale: RandomResizedCrop's range of the area kept.
        hflip: probability of a horizontal flip.
        auto_augment: timm's auto-augment spec (``rand-m9-mstd0.5``, ...), or None.
        color_jitter: timm's colour-jitter strength, or None for none.
        dtype: ``torch.float32`` ([0, 1]) or ``torch.uint8`` (0..255).
    """
    from timm.data.transforms_factory import transforms_imagenet_train
    from torchvision.transforms import Compose

    transform = transforms_imagenet_train(
        img_size=_size(config),
        scale=tuple(scale),
        hflip=hflip,
        auto_augment=auto_augment,
        color_jitter=color_jitter,
        interpolation=config.interpolation,
        mean=_fill_mean(config, in_chans),
        std=(1.0,) * in_chans,
        normalize=False,
    )
    return Compose([transform, to_float()]) if dtype == torch.float32 else transform


def choose_augmentation(config: "DataConfig") -> Literal["timm", "crop-flip"]:
    """``augment: auto``: timm's train transform from 64 px up, the CIFAR crop-flip below (where zooming
    into a random 8 % of a 32 px image leaves nothing to learn from).

    Args:
        config: the model's data config (its input size decides).
    """
    return "timm" if min(_size(config)) >= TIMM_AUGMENT_MIN_SIZE else "crop-flip"
