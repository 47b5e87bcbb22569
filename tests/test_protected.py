"""Protected classes (RECIPES.md, cost-sensitive): names resolve, metrics match a hand-computed confusion matrix."""

from __future__ import annotations

import pytest
import torch

from hardenctl.errors import UserError
from hardenctl.protected import cost_matrix, protected_metrics, resolve_protected


def test_names_and_ids_resolve_and_unknown_names_are_clear():
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog"]
    assert resolve_protected(["cat", "5", 3], names) == [3, 5]
    with pytest.raises(UserError) as error:
        resolve_protected(["cat", "tiger"], names)
    assert "'tiger'" in str(error.value) and "airplane" in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(UserError, match="out of range"):
        resolve_protected([7], names)


def test_protected_metrics_match_a_hand_computed_confusion_matrix():
    # 3 classes, class 2 protected with cost 5; rows = true class, columns = robust prediction:
    #   true 0: [2, 1, 0]   true 1: [0, 1, 1]   true 2: [1, 0, 2]
    y = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])
    pred = torch.tensor([0, 0, 1, 1, 2, 0, 2, 2])
    clean = torch.tensor([1.0, 1, 1, 1, 0, 1, 1, 0])
    m = protected_metrics(y, clean, pred, [2], 5.0, 3)
    assert m["n"] == 3
    assert (
        m["clean_accuracy"] == 2 / 3 and m["robust_accuracy"] == 2 / 3
    )  # counted then divided: exact, not a float32 mean
    assert (m["clean_correct"], m["robust_correct"]) == (2, 2)
    # cost: (0→1) 1 + (1→2) 1 + (2→0) 5 = 7 over 8 samples
    assert m["cost_weighted_robust_error"] == pytest.approx(7 / 8)
    assert protected_metrics(y, clean, pred, [0, 1], 10.0, 3)["cost_weighted_robust_error"] == pytest.approx(
        (10 + 10 + 1) / 8
    )


def test_a_randomised_model_s_protected_clean_count_is_whole_draws_over_draws():
    y = torch.tensor([2, 2, 2])
    clean = torch.tensor([2 / 3, 1 / 3, 1.0])  # fractions of 3 draws, stored as float32
    m = protected_metrics(y, clean, torch.tensor([2, 0, 2]), [2], 5.0, 3, draws=3)
    assert m["clean_correct"] == 6 / 3 and m["clean_accuracy"] == (6 / 3) / 3


def test_cost_matrix_rows():
    matrix = cost_matrix(4, [1], 10.0)
    assert torch.equal(matrix.diagonal(), torch.zeros(4))
    assert torch.equal(matrix[1], torch.tensor([10.0, 0, 10, 10])) and torch.equal(
        matrix[0], torch.tensor([0.0, 1, 1, 1])
    )
    with pytest.raises(UserError, match="below the model"):
        cost_matrix(4, [4], 10.0)
