"""Photo-making helpers for tests/data (a uniquely named module: `conftest` is ambiguous across folders)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

IMAGEWOOF = (
    Path(__file__).resolve().parents[3] / "shared" / "data" / "imagewoof"
)  # tests/data → tests → repo → its parent


def pattern(rng: np.random.Generator, height: int, width: int, channels: int = 3) -> np.ndarray:
    """Smooth gradients plus noise: resizing and cropping visibly change it, JPEG keeps it varied."""
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([(xx * (c + 1) * 7 + yy * (3 - c) * 5) % 256 for c in range(channels)], axis=-1)
    noisy = base + rng.integers(-40, 40, base.shape)
    image = np.clip(noisy, 0, 255).astype(np.uint8)
    return image[..., 0] if channels == 1 else image


def save(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    image.save(path, quality=90) if path.suffix.lower() in (".jpg", ".jpeg") else image.save(path)
    return path


CIFAR_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "cifar10"
