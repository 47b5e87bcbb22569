"""The normalised classifier every attack sees, and what we know about it.

A robust-accuracy number is only meaningful if the attack works in pixel space ([0, 1]) on exactly the
network that ships, so normalisation is folded into the model and every setting records its source.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from .data_config import DataConfig, build_data_config


@dataclass
class ModelInfo:
    """What we know about a loaded model, and where each setting came from."""

    arch: str
    num_classes: int
    in_chans: int = 3
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
    normalization_source: str = "unknown"
    input_size: tuple[int, int] | None = None  # (H, W) the model was declared for
    input_size_source: str | None = None
    randomized: bool = False
    path: str | None = None
    sha256: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)  # extra hardenctl metadata (recipe, ...)
    data_config: DataConfig | None = None  # how images must be prepared for this model, with each value's source
    label_names: list[str] | None = None  # class names the model was trained with, when known

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def set_input_size(self, size: tuple[int, int], source: str) -> None:
        """Record the input size decided with the data (undeclared models), in the info and its data config."""
        self.input_size, self.input_size_source = tuple(size), source
        if self.data_config is None:
            self.data_config = DataConfig(mean=self.mean, std=self.std)
        self.data_config.input_size = tuple(size)
        self.data_config.sources["input_size"] = source


class ImageClassifier(nn.Module):
    """[0, 1] pixels in, logits out: ``model((x - mean) / std)``.

    Folding normalisation in means every attack, ε and check works on pixels, the
    space in which a threat model is defined.
    """

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float], info: ModelInfo | None = None):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.info = info

    def forward(self, x: Tensor) -> Tensor:
        return self.model((x - self.mean.to(x.dtype)) / self.std.to(x.dtype))


def wrap_model(
    net: nn.Module,
    arch: str,
    num_classes: int,
    mean: Sequence[float],
    std: Sequence[float],
    in_chans: int = 3,
    input_size: tuple[int, int] | None = None,
    source: str = "python",
) -> ImageClassifier:
    """Wrap an in-memory timm model (e.g. one just trained) like :func:`load_model` would.

    The data config is resolved as loading does, the architecture's timm ``pretrained_cfg`` filling crop_pct,
    interpolation and crop mode, so the model prepares images the same way before and after a save.

    Args:
        net: the timm network (taking normalised input).
        arch: its timm architecture name.
        num_classes: classes of its head.
        mean: normalisation mean, one value per channel.
        std: normalisation std, one value per channel.
        in_chans: input channels.
        input_size: (H, W) the model was trained at, if declared.
        source: what the data config records as where the declared values came from.
    """
    declared = {"mean": tuple(mean), "std": tuple(std), "input_size": tuple(input_size) if input_size else None}
    arch_cfg = getattr(net, "pretrained_cfg", None) or {}
    config = build_data_config([(source, declared)], {}, arch_cfg, arch)
    info = ModelInfo(
        arch=arch,
        num_classes=num_classes,
        in_chans=in_chans,
        mean=tuple(mean),
        std=tuple(std),
        normalization_source=source,
        input_size=input_size,
        input_size_source=source if input_size else None,
        data_config=config,
    )
    return ImageClassifier(net, mean, std, info)
