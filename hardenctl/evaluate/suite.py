"""Running a suite: every attack on the points still robust, worst case per sample, fresh re-scoring.

Protocol (AutoAttack's): every attack runs only on the points still classified correctly, each adversarial batch
is checked against the threat model and re-scored by a fresh forward pass (EOT-repeated for randomised models),
and a point is robust only if it survives every attack. Nothing but per-sample results is kept across batches,
so memory stays flat in ``n``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import Tensor, nn

from ..attacks import PGD, Attack, GradientStats
from ..data import ImageDataset
from .config import Progress

BOUND_TOLERANCE = 1e-5


@dataclass
class SuiteResult:
    clean_correct: Tensor  # per sample: fraction of draws classified correctly
    robust: Tensor  # per sample bool: correct on every draw after every attack
    after_attack: dict[str, int] = field(default_factory=dict)  # name -> points still robust after it
    gradient_stats: dict[str, GradientStats] = field(default_factory=dict)  # attack name -> its first-gradient counts
    bound_violations: int = 0
    max_linf: float = 0.0
    max_l2: float = 0.0
    robust_prediction: Tensor | None = None  # per sample: prediction at the worst-case adversarial point (clean if wrong)


def buffers(model: nn.Module) -> dict[str, Tensor]:
    """A copy of every buffer (BN statistics), to show an evaluation left them unchanged."""
    return {name: buf.detach().clone() for name, buf in model.named_buffers()}


def is_randomized(model: nn.Module, x: Tensor, tries: int = 3) -> bool:
    """True when repeated eval-mode forward passes on the same input differ."""
    with torch.no_grad():
        first = model(x)
        return any(not torch.equal(first, model(x)) for _ in range(tries - 1))


def _score(model: nn.Module, x: Tensor, y: Tensor, draws: int) -> tuple[Tensor, Tensor, Tensor]:
    """(correct on every draw, fraction of draws correct, prediction) from fresh forward passes;
    the prediction is the first wrong draw's, or the (correct) first draw's when none is wrong."""
    with torch.no_grad():
        predictions = torch.stack([model(x).argmax(dim=1) for _ in range(draws)])
    hits = predictions == y
    first_wrong = (~hits).float().argmax(dim=0)
    return hits.all(dim=0), hits.float().mean(dim=0), predictions.gather(0, first_wrong.unsqueeze(0)).squeeze(0)


def _check_bounds(x_adv: Tensor, x: Tensor, eps: float, norm: str, result: SuiteResult) -> Tensor:
    """Count points outside the ε-ball or [0, 1]; return them projected so scores stay valid."""
    delta = (x_adv - x).flatten(1)
    linf = delta.abs().amax(dim=1)
    l2 = delta.norm(dim=1)
    outside_box = (x_adv < 0).flatten(1).any(dim=1) | (x_adv > 1).flatten(1).any(dim=1)
    radius = linf if norm == "linf" else l2
    bad = (radius > eps + BOUND_TOLERANCE) | outside_box | ~torch.isfinite(x_adv).flatten(1).all(dim=1)
    result.bound_violations += int(bad.sum())
    result.max_linf = max(result.max_linf, float(linf.max()) if len(linf) else 0.0)
    result.max_l2 = max(result.max_l2, float(l2.max()) if len(l2) else 0.0)
    if bad.any():
        fixed = x_adv.nan_to_num(0.5)
        helper = PGD(eps, norm)
        x_adv = torch.where(bad.view(-1, *[1] * (x.dim() - 1)), helper.project(fixed, x), x_adv)
    return x_adv


def run_suite(
    model: nn.Module, data: ImageDataset, attacks: Sequence[Attack], eps: float, norm: str, batch_size: int,
    seed: int, draws: int, device: torch.device, progress: Progress | None = None, stage: str = "attack",
) -> SuiteResult:
    """Clean and worst-case robust correctness per sample for one ε."""
    n = len(data)
    result = SuiteResult(torch.zeros(n), torch.zeros(n, dtype=torch.bool), {a.name: 0 for a in attacks},
                          robust_prediction=torch.zeros(n, dtype=torch.long))
    for attack in attacks:
        attack.gradient_stats = GradientStats()
    for start, x, y in data.batches(batch_size):
        x, y = x.to(device), y.to(device)
        # Seeding per batch makes a run repeat exactly and not depend on what ran before.
        torch.manual_seed(seed * 1_000_003 + start)
        robust, clean_frac, prediction = _score(model, x, y, draws)
        result.clean_correct[start:start + len(y)] = clean_frac.cpu()
        for attack in attacks:
            index = robust.nonzero().squeeze(1)
            if len(index):
                x_adv = _check_bounds(attack(model, x[index], y[index]), x[index], eps, norm, result)
                still, _, adv_prediction = _score(model, x_adv, y[index], draws)
                robust[index] = still
                prediction[index] = adv_prediction
            result.after_attack[attack.name] += int(robust.sum())
        result.robust[start:start + len(y)] = robust.cpu()
        result.robust_prediction[start:start + len(y)] = prediction.cpu()
        if progress:
            progress(stage, start + len(y), n)
    for attack in attacks:
        result.gradient_stats[attack.name] = attack.gradient_stats
    return result
