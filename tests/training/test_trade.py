"""The harden report's first lines: what the run bought, what it cost, and whether it stopped while still improving."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from hardenctl.stats import wilson_interval
from hardenctl.training.trade import rising_at_the_end, trade, trade_lines


@dataclass
class Evaluation:
    clean_accuracy: float
    robust_accuracy: float
    n: int = 200

    def interval(self, metric: str):
        return wilson_interval(getattr(self, metric), self.n)


def curve(*robust: float) -> list[dict]:
    return [{"epoch": i + 1, "holdout_robust_accuracy": r, "holdout_clean_accuracy": 0.8} for i, r in enumerate(robust)]


@pytest.mark.parametrize(
    "robust,scored,rising",
    [
        ((0.10, 0.20, 0.35), 500, True),  # climbing by 15 points, far above the 2.1-point noise of 500 images
        ((0.30, 0.31), 100, False),  # one point up, with 4.6 points of noise: not evidence
        ((0.30, 0.31), 100_000, True),  # the same point at n = 100,000 is
        ((0.20, 0.40, 0.35), 500, False),  # the last epoch fell back
        ((0.20, 0.40, 0.10, 0.38), 500, False),  # up from the epoch before, but below the best earlier one
        ((0.40,), 500, False),  # one epoch: cannot tell
    ],
)
def test_rising_needs_the_best_last_epoch_and_a_step_above_the_noise(robust, scored, rising):
    assert rising_at_the_end(curve(*robust), scored)[0] is rising


def test_the_trade_in_numbers_and_words():
    numbers = trade(Evaluation(0.90, 0.05), Evaluation(0.85, 0.25), curve(0.1, 0.2, 0.3), scored_n=500, epochs=3)
    assert numbers["clean"]["change_points"] == pytest.approx(-5.0) and numbers["robust"][
        "change_points"
    ] == pytest.approx(20.0)
    assert numbers["robust_points_per_clean_point"] == pytest.approx(4.0)
    assert numbers["robust"]["after_interval"][0] < 0.25 < numbers["robust"]["after_interval"][1]
    assert numbers["under_trained"] and "--epochs 6" in numbers["suggestion"]
    lines = trade_lines(numbers)
    assert lines[0].startswith("Robust accuracy 5.0% [") and "→ 25.0% [" in lines[0] and "(+20.0 points)" in lines[0]
    assert "(-5.0 points)" in lines[0] and "n = 200" in lines[0]
    assert lines[1] == "Trade: 4.00 robust points gained per clean point paid."
    assert (
        lines[2].startswith("Looks under-trained: held-out robust accuracy 20.0% → 30.0%") and "--epochs 6" in lines[2]
    )


def test_a_free_gain_and_no_gain_are_said_as_such():
    free = trade(Evaluation(0.80, 0.05), Evaluation(0.82, 0.15), curve(0.2, 0.2), scored_n=500, epochs=2)
    assert free["robust_points_per_clean_point"] is None and not free["under_trained"]
    assert trade_lines(free)[1] == "Trade: robust accuracy rose at no cost in clean accuracy."
    assert trade_lines(free)[2].startswith("Training curve: ")
    none = trade(Evaluation(0.80, 0.05), Evaluation(0.70, 0.05), curve(0.2, 0.2), scored_n=500, epochs=2)
    assert trade_lines(none)[1] == "Trade: 0.00 robust points gained per clean point paid."
