"""A folder evaluated is decoded once: the evaluation's pass over the batches fills the digest the report records.

The batches were taken through ``zip(numbers, data.batches(...))``, which stops on the batch numbers and never asks the
stream for its end, where a folder finishes its digest; the report's ``data_sha256`` then decoded every image again.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from torch import nn

from hardenctl.attacks import FGSM
from hardenctl.data import FolderDataset, load_dataset
from hardenctl.evaluation import SuiteRun, run_suite
from hardenctl.models.data_config import DataConfig


def test_the_evaluation_pass_fills_the_folder_digest(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        for i in range(5):
            Image.fromarray(rng.integers(0, 256, (12, 14, 3), dtype=np.uint8)).save(tmp_path / label / f"{i}.png")
    data = load_dataset(str(tmp_path), data_config=DataConfig(input_size=(8, 8)), workers=0)
    expected = load_dataset(str(tmp_path), data_config=DataConfig(input_size=(8, 8)), workers=0).sha256()
    passes: list[tuple[int, int]] = []
    stream = FolderDataset._stream

    def counting(self, start, stop, *args, **kwargs):
        passes.append((start, stop))
        return stream(self, start, stop, *args, **kwargs)

    monkeypatch.setattr(FolderDataset, "_stream", counting)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2))
    run_suite(model, data, SuiteRun([FGSM(0.03)], 0.03, "linf", 4))
    assert data.sha256() == expected
    assert passes == [(0, 10)]  # the evaluation's pass, none for the digest
