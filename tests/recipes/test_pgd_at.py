"""PGD-AT is CE on the adversarial example; standard is the same loss without an attack."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hardenctl.recipes import load_recipe
from hardenctl.recipes.pgd_at import PGDAT, Standard


def test_loss_is_cross_entropy_on_the_adversarial_example_only():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 4))
    x, x_adv, y = torch.rand(6, 1, 4, 4), torch.rand(6, 1, 4, 4), torch.randint(0, 4, (6,))
    recipe = load_recipe("pgd-at")
    assert isinstance(recipe, PGDAT)
    torch.testing.assert_close(recipe.loss(model, x, y, x_adv), F.cross_entropy(model(x_adv), y))


def test_madry_attack_settings_and_standard_has_no_attack():
    c = load_recipe("pgd-at").config
    assert (c.eps, c.attack_alpha, c.attack_steps, c.attack_start) == (8 / 255, 2 / 255, 10, "uniform")
    standard = load_recipe("standard")
    assert isinstance(standard, Standard) and standard.config.attack_steps == 0
    assert Standard.Config().attack_steps == 0  # also without the YAML
