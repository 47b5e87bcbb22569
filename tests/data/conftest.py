"""Folders of small random-pattern photos of mixed sizes and formats, made on the fly (no network)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from photo_helpers import pattern, save

torch.set_num_threads(1)


@pytest.fixture
def make_photos(tmp_path) -> Callable[..., Path]:
    """``make_photos({"cat": 3, "dog": 2}, sizes=[(h, w), ...])`` → a class-folder directory of ``imgNN`` files,
    by NN % 4: .jpg, greyscale .jpg, .png, .JPEG; sizes cycle over all images."""

    def make(
        classes: dict[str, int], sizes: list[tuple[int, int]] | None = None, root: Path | None = None, seed: int = 0
    ) -> Path:
        rng = np.random.default_rng(seed)
        root = root or tmp_path / "photos"
        sizes = sizes or [(37, 53), (64, 48), (90, 70), (48, 48), (33, 80), (71, 29)]
        counter = 0
        for name, count in classes.items():
            for i in range(count):
                h, w = sizes[counter % len(sizes)]
                grey = i % 4 == 1
                array = pattern(rng, h, w, 1 if grey else 3)
                save(root / name / f"img{i:02d}{('.jpg', '.jpg', '.png', '.JPEG')[i % 4]}", array)
                counter += 1
        return root

    return make
