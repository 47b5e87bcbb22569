"""Cost-sensitive adversarial training: protected classes and the Min-Max property
(Shen, Chen, Wang, Wang, "Adversarial Learning with Cost-Sensitive Classes", arXiv 2101.12372, IEEE 2022).

Why: some classes are costlier to get wrong than others (a stop sign read as anything else). The
paper combines cost-sensitive classification with adversarial learning so that *protected* classes
become less vulnerable, and observes that such training drives most conv weights toward 0 while a
few grow (the "Min-Max property"); a regulariser built on that property is a defence on its own.

Only the abstract is known and there is no official code, so everything below is **our design
[ours]** (RECIPES.md, "cost-sensitive"), configurable in ``recipes/cost-sensitive.yaml``:

* cost matrix C (K×K): C_jj = 0, C_jk = ``cost`` if class j is protected, else 1;
* C̄_j = the row mean of C, normalised so that unprotected rows weigh 1 (so C̄_j = ``cost`` for a
  protected j and 1 otherwise);
* loss on x' (the training PGD output, or x itself with ``adversarial: false``):
  mean_i C̄_{yᵢ}·ℓᵢ + λ·mean_i Σ_{k≠yᵢ} C_{yᵢ,k}·p_k(x'ᵢ), where ℓᵢ is the per-sample base loss:
  CE(f(x'ᵢ), yᵢ) for ``base: pgd-at``, TRADES' CE(f(xᵢ)) + β·KLᵢ or MART's per-sample terms otherwise
  (their batch means are exactly :func:`trades_loss` / :func:`mart_loss`). With equal costs
  (``cost: 1``) and λ = 0 this is the base loss; with λ > 0 the extra term is λ·(1 − p_y(x'));
* Min-Max regulariser (μ = ``minmax_mu``, 0 = off): μ·Σ_{|w| < quantile_{1−q}(|w|)} |w| summed over every
  conv layer's weight — an L1 pull on all but the largest q-fraction (``minmax_top_q``);
* ``protected`` takes class ids or names; ``api.harden`` turns names into ids with
  :func:`resolve_protected` and the training data's class names (the recipe never sees the dataset).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UserError
from ..protected import cost_matrix, protected_metrics, resolve_protected
from .base import LossFn, Recipe, RecipeConfig
from .mart import mart_per_sample
from .trades import base_attack_loss, trades_per_sample

BASES = ("pgd-at", "trades", "mart")
NEAR_ZERO = 1e-3  # |w| below this fraction of max|w| counts as "near zero" in the Min-Max statistics
QUANTILE_LIMIT = 16_000_000  # torch.quantile's input size limit; above it kthvalue gives the lower quantile


# -- protected classes --------------------------------------------------------------------------
def parse_protected(value: Any, where: str) -> tuple[int | str, ...]:
    """``[3, 5]``, ``3``, ``"3,5"`` or ``[cat, dog]`` → ids and names as given (ids as ints).

    Names are resolved to ids against the training data's class names by ``api.harden``
    (:func:`resolve_protected`); the recipe itself never sees the dataset.
    """
    items = value.split(",") if isinstance(value, str) else value
    if isinstance(items, int) and not isinstance(items, bool):
        items = [items]
    if not isinstance(items, (list, tuple)) or not items:
        raise UserError(
            f"{where}: protected={value!r} is not a list of class ids or names",
            "give e.g. protected: [3, 5] or [cat, dog]",
        )
    parsed: list[int | str] = []
    for item in items:
        text = item.strip() if isinstance(item, str) else item
        if isinstance(text, str) and text.isdigit():
            text = int(text)
        if (
            isinstance(text, bool)
            or not isinstance(text, (int, str))
            or (isinstance(text, int) and text < 0)
            or text == ""
        ):
            raise UserError(
                f"{where}: protected={value!r} has {item!r}, not a class id or name",
                "give class ids (0-based integers) or the dataset's class names, e.g. protected: [3, 5]",
            )
        if text not in parsed:
            parsed.append(text)
    return tuple(parsed)


def protected_ids(protected: Sequence[int | str]) -> list[int]:
    """The ids of a resolved ``protected`` (names left unresolved are a bug in the caller, not the user's error)."""
    if any(not isinstance(p, int) for p in protected):
        raise RuntimeError(
            f"protected classes {list(protected)} hold names: resolve them against the dataset first "
            "(hardenctl.api.harden does)"
        )
    return sorted(protected)


def class_weights(matrix: Tensor) -> Tensor:
    """C̄: the row means of C, divided by an unprotected row's mean (K−1)/K so unprotected rows weigh 1."""
    k = matrix.shape[0]
    return matrix.mean(dim=1) / ((k - 1) / k) if k > 1 else torch.ones(k)


def cost_sensitive_loss(
    per_sample: Tensor, logits_adv: Tensor, y: Tensor, matrix: Tensor, lambda_cost: float
) -> Tensor:
    """mean_i C̄_{yᵢ}·ℓᵢ + λ·mean_i Σ_{k≠yᵢ} C_{yᵢ,k}·p_k(x'ᵢ) for a per-sample base loss ℓ."""
    matrix = matrix.to(per_sample.device, per_sample.dtype)
    total = (class_weights(matrix)[y] * per_sample).mean()
    if lambda_cost:
        probs = F.softmax(logits_adv.float(), dim=1)
        total = total + float(lambda_cost) * (matrix[y] * probs).sum(dim=1).mean()  # C_yy = 0 drops k = y
    return total


# -- the Min-Max property -----------------------------------------------------------------------
def conv_weights(model: nn.Module) -> list[tuple[str, Tensor]]:
    return [(name, m.weight) for name, m in model.named_modules() if isinstance(m, nn.modules.conv._ConvNd)]


def _upper_quantile(values: Tensor, level: float) -> Tensor:
    if values.numel() <= QUANTILE_LIMIT:
        return torch.quantile(values, level)
    return values.kthvalue(max(1, int(level * values.numel()))).values


def minmax_penalty(model: nn.Module, mu: float, top_q: float) -> Tensor:
    """μ·Σ over conv layers of Σ_{|w| < quantile_{1−q}(|w|)} |w| (the top-q weights are left free)."""
    total = torch.zeros(())
    for _, weight in conv_weights(model):
        magnitude = weight.abs().flatten()
        threshold = _upper_quantile(magnitude.detach().float(), 1.0 - top_q)
        total = total.to(weight.device) + magnitude[magnitude < threshold].sum()
    return float(mu) * total


def minmax_stats(model: nn.Module) -> list[dict]:
    """Per conv layer: fraction of |w| < 1e-3·max|w|, max|w|, Pearson kurtosis E[(w−μ)⁴]/σ⁴ (population σ; None
    when σ = 0)."""
    rows = []
    for name, weight in conv_weights(model):
        w = weight.detach().double().flatten()
        peak = float(w.abs().max())
        centred = w - w.mean()
        var = float((centred**2).mean())
        rows.append(
            {
                "layer": name,
                "n": w.numel(),
                "near_zero_fraction": float((w.abs() < NEAR_ZERO * peak).double().mean()),
                "max_abs": peak,
                "kurtosis": float((centred**4).mean()) / var**2 if var > 0 else None,
            }
        )
    return rows


def minmax_summary(before: list[dict], after: list[dict]) -> str:
    """One line: did the Min-Max property appear (median near-zero fraction AND median max|w| rose)?"""
    if not before or not after:
        return "Min-Max property: no conv layers to measure"

    def med(rows: list[dict], key: str) -> float:
        return statistics.median([r[key] for r in rows if r[key] is not None] or [float("nan")])

    z0, z1 = med(before, "near_zero_fraction"), med(after, "near_zero_fraction")
    m0, m1 = med(before, "max_abs"), med(after, "max_abs")
    k0, k1 = med(before, "kurtosis"), med(after, "kurtosis")
    verdict = "appeared" if z1 > z0 and m1 > m0 else "did not appear"
    return (
        f"Min-Max property {verdict}: median near-zero fraction {z0:.4f} → {z1:.4f}, median max|w| {m0:.4g} → "
        f"{m1:.4g}, "
        f"median kurtosis {k0:.3g} → {k1:.3g} over {len(after)} conv layers"
    )


# -- the recipe ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class CostSensitiveConfig(RecipeConfig):
    protected: tuple[int | str, ...] = field(default=(3, 5), metadata={"parse": parse_protected})
    cost: float = field(default=10.0, metadata={"min": 0.0})
    lambda_cost: float = field(default=0.0, metadata={"min": 0.0})
    adversarial: bool = True
    base: str = field(default="pgd-at", metadata={"choices": BASES})
    beta: float = field(default=6.0, metadata={"min": 0.0})
    minmax_mu: float = field(default=0.0, metadata={"min": 0.0})
    minmax_top_q: float = field(default=0.05, metadata={"min": 0.0, "max": 1.0})


class CostSensitive(Recipe):
    name = "cost-sensitive"
    paper = "Shen et al., Adversarial Learning with Cost-Sensitive Classes, arXiv 2101.12372 (IEEE 2022)"
    improves = "robustness of protected classes: cost-weighted adversarial loss, optional Min-Max weight regulariser"
    interpretation = (
        "ours (only the abstract is known): cost matrix C_jk = cost for protected j else 1; loss = mean C̄_y·ℓ "
        "+ λ·Σ_{k≠y} C_{y,k}·p_k(x') with ℓ the per-sample pgd-at/trades/mart loss; Min-Max regulariser "
        "μ·Σ_{|w| < quantile_{1−q}(|w|)} |w| over conv weights"
    )
    Config = CostSensitiveConfig

    def report_extra(self, before: nn.Module, after: nn.Module) -> dict[str, Any]:
        """The harden report's section: Min-Max statistics of the input and the hardened model, and the one-line
        verdict."""
        first, last = minmax_stats(before), minmax_stats(after)
        return {
            "minmax": {
                "before": first,
                "after": last,
                "summary": minmax_summary(first, last),
                "mu": self.config.minmax_mu,
                "top_q": self.config.minmax_top_q,
            }
        }

    def attack_loss(self, model: nn.Module, x: Tensor, y: Tensor) -> LossFn:
        return base_attack_loss(self.config.base, model, x, y)

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, x_adv: Tensor) -> Tensor:
        c = self.config
        x_train = x_adv if c.adversarial else x
        logits_adv = model(x_train).float()
        if c.base == "pgd-at":
            per_sample = F.cross_entropy(logits_adv, y, reduction="none", label_smoothing=c.label_smoothing)
        else:
            logits = model(x).float()
            per_sample = (trades_per_sample if c.base == "trades" else mart_per_sample)(
                logits, logits_adv, y, c.beta, c.label_smoothing
            )
        matrix = cost_matrix(logits_adv.shape[1], protected_ids(c.protected), c.cost)
        total = cost_sensitive_loss(per_sample, logits_adv, y, matrix, c.lambda_cost)
        if c.minmax_mu:
            total = total + minmax_penalty(getattr(model, "module", model), c.minmax_mu, c.minmax_top_q)
        return total


__all__ = [
    "BASES",
    "CostSensitive",
    "CostSensitiveConfig",
    "class_weights",
    "cost_matrix",
    "cost_sensitive_loss",
    "mart_per_sample",
    "minmax_penalty",
    "minmax_stats",
    "minmax_summary",
    "parse_protected",
    "protected_ids",
    "protected_metrics",
    "resolve_protected",
    "trades_per_sample",
]
