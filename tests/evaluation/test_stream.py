"""A folder evaluated is decoded once: the evaluation's pass over the batches fills the digest the report records.

The batches were taken through ``zip(numbers, data.batches(...))``, which stops on the batch numbers and never asks the
stream for its end, where a folder finishes its digest; the report's ``data_sha256`` then decoded every image again.
"""

from __future__ import annotations

import hashlib

import numpy as np
from PIL import Image
from torch import nn

from hardenctl.attacks import FGSM
from hardenctl.data import FolderDataset, load_dataset
from hardenctl.evaluation import SuiteRun, run_suite


def test_the_evaluation_pass_fills_the_folder_digest(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    images = {label: [rng.integers(0, 256, (8, 8, 3), dtype=np.uint8) for _ in range(5)] for label in ("a", "b")}
    for label, pixels in images.items():
        (tmp_path / label).mkdir()
        for i, image in enumerate(pixels):
            Image.fromarray(image).save(tmp_path / label / f"{i}.png")
    data = load_dataset(str(tmp_path), workers=0, size=(8, 8))  # squashed to its own size: the pixels as stored
    # The digest's documented layout (ArrayDataset.sha256's), computed here from the images written: dtype and shape,
    # the uint8 CHW pixels in the folder's class-interleaved order (a0 b0 a1 b1 ...), then the int64 labels.
    order = [(label, i) for i in range(5) for label in ("a", "b")]
    expected = hashlib.sha256(b"torch.uint8(10, 3, 8, 8)")
    expected.update(np.stack([images[label][i].transpose(2, 0, 1) for label, i in order]).tobytes())
    expected.update(np.array([0 if label == "a" else 1 for label, _ in order], dtype=np.int64).tobytes())
    passes: list[tuple[int, int]] = []
    stream = FolderDataset._stream

    def counting(self, start, stop, *args, **kwargs):
        passes.append((start, stop))
        return stream(self, start, stop, *args, **kwargs)

    monkeypatch.setattr(FolderDataset, "_stream", counting)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2))
    run_suite(model, data, SuiteRun([FGSM(0.03)], 0.03, "linf", 4))
    assert passes == [(0, 10)]  # the evaluation's pass...
    assert data.sha256() == expected.hexdigest()  # ...filled the digest of what it decoded (no pass of its own)
    assert passes == [(0, 10)]
