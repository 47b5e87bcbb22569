"""AToP's front-end: random transforms, a small inpainting purifier, and the composite model f(g(t(x))).

Why: a user who cannot retrain a classifier f can still put something in front of it. AToP (Lin et al.,
ICLR 2024) destroys an adversarial perturbation with a random transform t and restores the image with a
purifier g. What ships, and what must be attacked (with EOT, because t is random), is the whole
pipeline, so it is one module: :class:`PurifiedClassifier`, an :class:`ImageClassifier` whose forward
first purifies. Everything that reads an ImageClassifier (attacks, ``evaluate``, ``save_model``) takes it.

Random transforms (RECIPES.md ``atop``; rt2 read in the official notebooks, rt1 and rt3 our reading of them):

* ``rt1``: mask only: zero a random ``missing_rate`` fraction of the blocks of a ``block``×``block`` grid
  (the exact count ⌊missing_rate·blocks⌋ per image); the mask goes to g as an extra input channel;
* ``rt2``: x + σ·N(0, I), clipped to [0, 1], then rt1's mask;
* ``rt3``: rt2's noise, then the blocks split into round(1/missing_rate) disjoint random masks; every masked
  copy is purified and each block is taken from the pass that had it masked (every output pixel is inpainted).

Draws are per image (the official code draws one mask per batch) from torch's global RNG on the input's
device, or from a generator, so ``--seed`` repeats a run. ``fixed_seed`` instead uses one noise and one
mask drawn from that seed for every image and every pass: deterministic, for debugging, not the defence.

The purifier [ours]: the paper fine-tunes a pretrained DeepFillv2 GAN, which we cannot download, so we ship
a small U-Net (``width`` channels at full resolution, doubling at each of ``depth`` stride-2 levels,
nearest-neighbour upsampling with skip connections, no normalisation layers so train and eval mode compute
the same function). It outputs a correction added to t(x), unclamped: starting near the identity keeps the
L1 loss from collapsing to a blank image (a sigmoid output did, on digits), and no clamp flattens attack gradients.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UserError
from .classifier import ImageClassifier

TRANSFORMS = ("rt1", "rt2", "rt3")
ATOP_FORMAT = 1
PURIFIER_PREFIX = "atop_purifier."  # the purifier's keys in model.safetensors; the classifier keeps bare timm keys
Draw = tuple[Tensor | None, Tensor]  # (noise or None, masks: parts × N × 1 × H × W; N = 1 broadcasts over the batch)


# ---------------------------------------------------------------------------------------------
# random transforms
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TransformConfig:
    """What t is: ``kind`` (rt1/rt2/rt3), noise ``sigma``, ``missing_rate`` and ``block`` (pixels per block side)."""

    kind: str = "rt2"
    sigma: float = 0.25
    missing_rate: float = 0.25
    block: int = 4

    def __post_init__(self) -> None:
        where, fix = "AToP transform", "see recipes/atop.yaml for valid values"
        if self.kind not in TRANSFORMS:
            raise UserError(f"{where}: rt={self.kind!r} is not a transform", f"use one of {', '.join(TRANSFORMS)}")
        if not (isinstance(self.block, int) and not isinstance(self.block, bool) and self.block >= 1):
            raise UserError(f"{where}: block={self.block!r} is not a positive whole number of pixels", fix)
        for name, value, low, high in (("sigma", self.sigma, 0.0, 1.0), ("missing_rate", self.missing_rate, 0.0, 0.95)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
                raise UserError(f"{where}: {name}={value!r} is out of range", f"{name} must be in [{low:g}, {high:g}]")
        if self.kind == "rt3" and not 0.05 <= self.missing_rate <= 0.5:
            raise UserError(
                f"{where}: rt3 needs missing_rate in [0.05, 0.5], got {self.missing_rate:g}",
                "rt3 splits the blocks into round(1/missing_rate) disjoint masks: set missing_rate to e.g. 0.25",
            )

    @property
    def parts(self) -> int:
        """Masks per forward pass: 1, or round(1/missing_rate) disjoint ones for rt3."""
        return max(2, round(1 / self.missing_rate)) if self.kind == "rt3" and self.missing_rate > 0 else 1

    @property
    def noisy(self) -> bool:
        return self.kind != "rt1" and self.sigma > 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def masked_blocks(cells: int, missing_rate: float) -> int:
    """⌊missing_rate·cells⌋ (the official count), with a guard against 0.25·64 = 15.999…

    Args:
        cells: blocks in the image.
        missing_rate: fraction of them masked.
    """
    return int(missing_rate * cells + 1e-9)


def block_masks(
    n: int,
    size: tuple[int, int],
    block: int,
    missing_rate: float,
    parts: int = 1,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Random block masks, ``parts × n × 1 × H × W`` (1 = masked), an independent permutation of the blocks per image.

    ``parts == 1``: ⌊missing_rate·blocks⌋ blocks masked. ``parts > 1``: the blocks split into ``parts``
    disjoint groups whose sizes differ by at most one (together they cover every pixel once).
    A partial block at the right/bottom edge (H or W not divisible by ``block``) is cropped.

    Args:
        n: images.
        size: (H, W) of each image.
        block: side of a square block, in pixels.
        missing_rate: fraction of the blocks masked (``parts == 1``).
        parts: 1: one mask per image; more: disjoint groups covering the image.
        generator: where the permutations come from (None: torch's global generator).
        device: where the masks are made.
    """
    height, width = size
    rows, cols = math.ceil(height / block), math.ceil(width / block)
    cells = rows * cols
    order = torch.rand(n, cells, generator=generator, device=device).argsort(dim=1)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(cells, device=order.device).expand(n, -1))
    if parts == 1:
        chosen = (rank < masked_blocks(cells, missing_rate)).unsqueeze(0)
    else:
        group = rank * parts // cells
        chosen = torch.stack([group == k for k in range(parts)])
    grid = chosen.view(parts, n, 1, rows, cols).float()
    return grid.repeat_interleave(block, dim=3).repeat_interleave(block, dim=4)[..., :height, :width]


class RandomTransform(nn.Module):
    """t: a fresh noise and mask per image and per call (or a fixed one, see ``fixed_seed``). No parameters."""

    def __init__(self, config: TransformConfig, fixed_seed: int | None = None):
        super().__init__()
        self.config = config
        self.fixed_seed = fixed_seed

    def extra_repr(self) -> str:
        c = self.config
        fixed = f", fixed_seed={self.fixed_seed}" if self.fixed_seed is not None else ""
        return f"{c.kind}, sigma={c.sigma:g}, missing_rate={c.missing_rate:g}, block={c.block}{fixed}"

    def draw(self, x: Tensor, generator: torch.Generator | None = None) -> Draw:
        """(noise or None, masks) for a batch ``x``; in fixed mode one image's worth, broadcast over the batch."""
        c = self.config
        n, device = x.shape[0], x.device
        if self.fixed_seed is not None:
            generator, n, device = torch.Generator().manual_seed(int(self.fixed_seed)), 1, torch.device("cpu")
        noise = None
        if c.noisy:
            noise = c.sigma * torch.randn((n, *x.shape[1:]), generator=generator, device=device)
        masks = block_masks(n, tuple(x.shape[-2:]), c.block, c.missing_rate, c.parts, generator, device)
        return (noise.to(x.device, x.dtype) if noise is not None else None), masks.to(x.device, x.dtype)

    @staticmethod
    def apply(x: Tensor, noise: Tensor | None, mask: Tensor) -> Tensor:
        """clip(x + noise, 0, 1) with the masked pixels zeroed."""
        noisy = (x + noise).clamp(0.0, 1.0) if noise is not None else x
        return noisy * (1 - mask)


# ---------------------------------------------------------------------------------------------
# the purifier
# ---------------------------------------------------------------------------------------------
def _convs(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1),
        nn.ReLU(inplace=True),
    )


class InpaintingPurifier(nn.Module):
    """g: (masked, noisy image; mask) → restored image (t(x) plus a learned correction), a small U-Net [ours]."""

    def __init__(self, channels: int, width: int = 32, depth: int = 2):
        super().__init__()
        self.channels, self.width, self.depth = int(channels), int(width), int(depth)
        widths = [self.width * 2**level for level in range(self.depth + 1)]
        self.stem = _convs(self.channels + 1, widths[0])
        self.down = nn.ModuleList(_convs(widths[i], widths[i + 1], stride=2) for i in range(self.depth))
        self.up = nn.ModuleList(_convs(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(self.depth)))
        self.head = nn.Conv2d(widths[0], self.channels, 1)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, width={self.width}, depth={self.depth}"

    def forward(self, image: Tensor, mask: Tensor) -> Tensor:
        h = self.stem(torch.cat([image, mask.expand(image.shape[0], -1, -1, -1)], dim=1))
        skips = [h]
        for down in self.down:
            h = down(h)
            skips.append(h)
        skips.pop()
        for up in self.up:
            skip = skips.pop()
            h = up(torch.cat([F.interpolate(h, size=skip.shape[-2:], mode="nearest"), skip], dim=1))
        return image + self.head(
            h
        )  # a correction of t(x): the identity is easy to learn, and no squashing flattens gradients


def new_purifier(channels: int, width: int, depth: int, seed: int = 0) -> InpaintingPurifier:
    """A purifier initialised from ``seed`` (the harden run's ``--seed``), leaving the global RNG as it was.

    Args:
        channels: image channels.
        width: channels of the U-Net's first level.
        depth: down-sampling levels.
        seed: seeds the initial weights.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return InpaintingPurifier(channels, width, depth)


# ---------------------------------------------------------------------------------------------
# the composite
# ---------------------------------------------------------------------------------------------
class PurifiedClassifier(ImageClassifier):
    """f(g(t(x))): [0, 1] pixels in, logits out, like the :class:`ImageClassifier` it wraps.

    The classifier's weights are frozen (``requires_grad`` off) and it stays in ``eval()`` mode even
    when the composite is put in ``train()`` mode, so neither the optimiser nor BatchNorm statistics
    ever change it: only the purifier learns.
    """

    def __init__(self, classifier: ImageClassifier, purifier: InpaintingPurifier, transform: RandomTransform):
        if classifier.info is None:
            raise ValueError("the classifier has no ModelInfo; build it with load_model or wrap_model")
        mean, std = classifier.mean.flatten().tolist(), classifier.std.flatten().tolist()
        super().__init__(classifier.model, mean, std, dataclasses.replace(classifier.info))
        self.purifier = purifier
        self.transform = transform
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        self.info.metadata = {**self.info.metadata, "atop": atop_metadata(transform.config, purifier)}
        self.info.randomized = transform.fixed_seed is None
        self.to(classifier.mean.device)
        self.train(classifier.training)

    def train(self, mode: bool = True) -> PurifiedClassifier:
        super().train(mode)
        self.model.eval()  # the frozen classifier's BatchNorm statistics must never move
        return self

    def purify(self, x: Tensor, draw: Draw | None = None) -> Tensor:
        """g(t(x)) for one draw of t (a fresh one unless given)."""
        noise, masks = draw if draw is not None else self.transform.draw(x)
        if masks.shape[0] == 1:
            return self.purifier(self.transform.apply(x, noise, masks[0]), masks[0])
        return sum(mask * self.purifier(self.transform.apply(x, noise, mask), mask) for mask in masks)

    def classify(self, x: Tensor) -> Tensor:
        """f(x): the frozen classifier alone."""
        return super().forward(x)

    def forward(self, x: Tensor, draw: Draw | None = None, output: str = "logits") -> Tensor | tuple[Tensor, Tensor]:
        """Logits of f(g(t(x))); ``output="purified"`` stops at g(t(x)), ``"both"`` returns (g(t(x)), logits)."""
        purified = self.purify(x, draw)
        if output == "purified":
            return purified
        logits = self.classify(purified)
        return (purified, logits) if output == "both" else logits

    def classifier_only(self) -> ImageClassifier:
        """The bare classifier (shared weights, no purifier): what a classifier-only (BPDA) attack differentiates."""
        metadata = {k: v for k, v in self.info.metadata.items() if k != "atop"}
        info = dataclasses.replace(self.info, randomized=False, metadata=metadata)
        bare = ImageClassifier(self.model, self.mean.flatten().tolist(), self.std.flatten().tolist(), info)
        return bare.to(self.mean.device).eval()

    def set_fixed_mask(self, seed: int | None) -> None:
        """One noise and mask from ``seed`` for every image (deterministic, debugging only); None: random again."""
        self.transform.fixed_seed = None if seed is None else int(seed)
        self.info.randomized = seed is None

    def extra_tensors(self) -> dict[str, Tensor]:
        """The purifier's weights under :data:`PURIFIER_PREFIX` (``save_model`` adds them to the classifier's)."""
        return {PURIFIER_PREFIX + key: value for key, value in self.purifier.state_dict().items()}

    def report_section(self) -> dict[str, Any]:
        """What an evaluation report says about this model (``evaluate`` puts it in ``extra["purifier"]``)."""
        c = self.transform.config
        fixed = self.transform.fixed_seed
        mode = (
            f"FIXED noise and mask from seed {fixed} (debugging: deterministic, not the deployed defence)"
            if fixed is not None
            else "a fresh random draw per image and pass, so attacks average gradients over EOT draws"
        )
        return {
            "transform": c.to_dict(),
            "fixed_mask_seed": fixed,
            "purifier": {"width": self.purifier.width, "depth": self.purifier.depth},
            "summary": f"AToP composite f(g(t(x))): transform {c.kind} (sigma {c.sigma:g}, "
            f"missing_rate {c.missing_rate:g}, block {c.block}) with {mode}",
        }


def atop_metadata(config: TransformConfig, purifier: InpaintingPurifier) -> dict[str, Any]:
    """What :func:`restore_composite` needs (saved under ``hardenctl.atop`` in model.safetensors).

    Args:
        config: the random transform t's settings.
        purifier: the purifier g.
    """
    return {
        "format": ATOP_FORMAT,
        "transform": config.to_dict(),
        "purifier": {"channels": purifier.channels, "width": purifier.width, "depth": purifier.depth},
    }


def split_tensors(state: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """(classifier tensors, purifier tensors without their prefix) of a composite checkpoint.

    Args:
        state: every tensor of the checkpoint.
    """
    classifier = {k: v for k, v in state.items() if not k.startswith(PURIFIER_PREFIX)}
    purifier = {k[len(PURIFIER_PREFIX) :]: v for k, v in state.items() if k.startswith(PURIFIER_PREFIX)}
    return classifier, purifier


def _whole(value: Any, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def restore_composite(classifier: ImageClassifier, meta: Any, tensors: Mapping[str, Tensor]) -> PurifiedClassifier:
    """Rebuild the composite a checkpoint's ``hardenctl.atop`` metadata describes around ``classifier``.

    Args:
        classifier: the loaded classifier f.
        meta: the checkpoint's ``hardenctl.atop`` metadata (checked here).
        tensors: the purifier's tensors, prefix removed (:func:`split_tensors`).
    """
    fix = "re-export the model with hardenctl harden --recipe atop"
    transform = meta.get("transform") if isinstance(meta, Mapping) else None
    shape = meta.get("purifier") if isinstance(meta, Mapping) else None
    if not isinstance(transform, Mapping) or not isinstance(shape, Mapping):
        raise UserError(f"the checkpoint's AToP metadata is malformed ({meta!r:.120})", fix)
    version = meta.get("format")
    if not _whole(version, 1) or version > ATOP_FORMAT:
        raise UserError(
            f"the checkpoint's AToP metadata has format {version!r}, which this hardenctl cannot read",
            "upgrade hardenctl",
        )
    unknown = set(transform) - {f.name for f in dataclasses.fields(TransformConfig)}
    channels, width, depth = shape.get("channels"), shape.get("width"), shape.get("depth")
    if unknown or not (_whole(channels, 1) and _whole(width, 1) and _whole(depth, 0)):
        raise UserError(
            f"the checkpoint's AToP metadata is malformed (transform {dict(transform)!r:.100}, "
            f"purifier {dict(shape)!r:.100})",
            fix,
        )
    if channels != classifier.info.in_chans:
        raise UserError(
            f"the checkpoint's purifier takes {channels} channels but its classifier {classifier.info.in_chans}", fix
        )
    try:
        config = TransformConfig(**transform)
    except (TypeError, UserError) as exc:
        raise UserError(f"the checkpoint's AToP transform is invalid ({exc})", fix) from None
    purifier = InpaintingPurifier(channels, width, depth)
    try:
        purifier.load_state_dict(dict(tensors), strict=True)
    except RuntimeError as exc:
        first = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()][:1]
        raise UserError(
            f"the checkpoint's purifier weights do not fit width {width}, depth {depth} "
            f"({first[0][:160] if first else 'key mismatch'})",
            fix,
        ) from None
    return PurifiedClassifier(classifier, purifier, RandomTransform(config))


__all__ = [
    "ATOP_FORMAT",
    "PURIFIER_PREFIX",
    "TRANSFORMS",
    "Draw",
    "InpaintingPurifier",
    "PurifiedClassifier",
    "RandomTransform",
    "TransformConfig",
    "atop_metadata",
    "block_masks",
    "masked_blocks",
    "new_purifier",
    "restore_composite",
    "split_tensors",
]
