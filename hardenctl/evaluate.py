"""The evaluation engine: run a suite, keep the worst case per sample, check for false robustness.

Protocol (AutoAttack's): every attack runs only on the points still classified
correctly, each adversarial batch is re-scored by a fresh forward pass (EOT-repeated
for randomised models), and a point is robust only if it survives every attack.
Nothing but per-sample booleans is kept across batches, so memory stays flat in ``n``.
"""
from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import timm
import torch
from torch import Tensor, nn

from . import __version__
from .attacks import PGD, Attack, GradientStats
from .attacks.suites import build_custom, build_suite
from .data import ImageDataset
from .errors import UserError
from .report import SCHEMA_VERSION, Check, Report

Progress = Callable[[str, int, int], None]  # (stage, done, total)
LARGE_EPS = 0.5
BOUND_TOLERANCE = 1e-5


@dataclass
class EvalConfig:
    """Everything that determines an evaluation's result (echoed into the report)."""

    eps: float = 8 / 255
    norm: str = "linf"
    suite: str = "standard"
    attacks: Sequence[str] | None = None  # custom list overrides the suite
    n: int | None = 1000
    batch_size: int = 128
    seed: int = 0
    eot_samples: int = 20
    eps_sweep: Sequence[float] | None = None
    apgd_steps: int = 100
    square_queries: int = 5000
    large_eps_samples: int = 100  # points used by the "accuracy at ε = 0.5" check; 0 disables it
    randomized: bool | None = None  # None: detect by repeated forward passes
    protected: Sequence[int] | None = None  # class ids whose metrics go to report.extra["protected"]
    protected_cost: float = 10.0  # cost of misclassifying a protected class (the cost-sensitive recipe's C)
    attack_model: nn.Module | None = None  # attacks differentiate this model instead (e.g. AToP's classifier alone: BPDA)

    def attacks_for(self, eps: float, draws: int) -> list[Attack]:
        """The attacks of one run; with ``attack_model`` each runs on that model and is scored on the evaluated one."""
        if self.attack_model is None:
            return self.build_attacks(eps, draws)
        return [Transferred(attack, self.attack_model) for attack in self.build_attacks(eps, 1)]

    def suite_name(self) -> str:
        return "custom" if self.attacks else self.suite

    def build_attacks(self, eps: float, eot_samples: int) -> list[Attack]:
        if self.attacks:
            return build_custom(self.attacks, eps, self.norm, eot_samples, self.apgd_steps, self.square_queries)
        return build_suite(self.suite, eps, self.norm, eot_samples, self.seed, self.apgd_steps, self.square_queries)


class Transferred(Attack):
    """An attack computed on another model (``source``) whose points the evaluated model scores.

    With ``source`` the bare classifier of a purifier pipeline this is the classifier-only (BPDA
    identity) attack: it ignores the purifier and the random transform, so the robustness it shows
    is optimistic (RECIPES.md ``atop``: 81 vs 64); the honest number attacks the whole pipeline.
    """

    def __init__(self, inner: Attack, source: nn.Module):
        super().__init__(inner.eps, inner.norm, 1)
        self.inner, self.source = inner, source
        self.name = inner.name  # the same row as the end-to-end attack in reports

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        self.inner.gradient_stats = self.gradient_stats  # the source's gradients are the ones this attack uses
        return self.inner(self.source, x, y)

    def __repr__(self) -> str:
        source = getattr(getattr(self.source, "info", None), "arch", None) or type(self.source).__name__
        return f"{self.inner!r} computed on {source} alone (transferred)"


@dataclass
class _SuiteResult:
    clean_correct: Tensor  # per sample: fraction of draws classified correctly
    robust: Tensor  # per sample bool: correct on every draw after every attack
    after_attack: dict[str, int] = field(default_factory=dict)  # name -> points still robust after it
    gradient_stats: GradientStats = field(default_factory=GradientStats)
    bound_violations: int = 0
    max_linf: float = 0.0
    max_l2: float = 0.0
    robust_prediction: Tensor | None = None  # per sample: prediction at the worst-case adversarial point (clean if wrong)


def _buffers(model: nn.Module) -> dict[str, Tensor]:
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


def _check_bounds(x_adv: Tensor, x: Tensor, eps: float, norm: str, result: _SuiteResult) -> Tensor:
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
) -> _SuiteResult:
    """Clean and worst-case robust correctness per sample for one ε."""
    n = len(data)
    result = _SuiteResult(torch.zeros(n), torch.zeros(n, dtype=torch.bool), {a.name: 0 for a in attacks},
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
        result.gradient_stats.add(attack.gradient_stats)
    return result


def evaluate(model: nn.Module, data: ImageDataset, config: EvalConfig | None = None, progress: Progress | None = None) -> Report:
    """Evaluate ``model`` ([0, 1] pixels → logits) on ``data`` and return the :class:`Report`."""
    config = config or EvalConfig()
    started = time.perf_counter()
    data = data.head(config.n)
    device = next(model.parameters()).device
    num_classes = getattr(getattr(model, "info", None), "num_classes", None)
    if num_classes is not None and len(data) and int(data.y.max()) >= num_classes:
        raise UserError(f"the data has label {int(data.y.max())} but the model has {num_classes} classes",
                        "use data whose labels are 0..num_classes-1, or the matching model")
    was_training = model.training
    model.eval()
    buffers_before = _buffers(model)

    probe = data.pixels(0, min(len(data), 16)).to(device)
    torch.manual_seed(config.seed)
    detected = is_randomized(model, probe)
    randomized = bool(config.randomized) or detected or bool(getattr(getattr(model, "info", None), "randomized", False))
    draws = config.eot_samples if randomized else 1

    attacks = config.attacks_for(config.eps, draws)
    main = run_suite(model, data, attacks, config.eps, config.norm, config.batch_size, config.seed, draws, device, progress, "attacks")
    n = len(data)
    clean_accuracy = float(main.clean_correct.mean()) if n else 0.0
    robust_accuracy = float(main.robust.float().mean()) if n else 0.0
    attack_accuracy = {name: count / n for name, count in main.after_attack.items()} if n else {}

    checks = [
        Check("robust_le_clean", robust_accuracy <= clean_accuracy + 1e-12,
              f"robust {robust_accuracy:.4f} <= clean {clean_accuracy:.4f}"),
        Check("perturbations_in_bounds", main.bound_violations == 0,
              f"{main.bound_violations} adversarial points outside the {config.norm} ball of {config.eps:.5g} or [0,1] "
              f"(max L∞ {main.max_linf:.5g}, max L2 {main.max_l2:.5g}); all re-scored by a fresh forward pass"),
    ]
    stats = main.gradient_stats
    checks.append(Check("input_gradients_nonzero", stats.zero + stats.nonfinite == 0,
                        f"{stats.zero} zero and {stats.nonfinite} NaN/inf input gradients over {stats.points} attacked points"))
    names = list(attack_accuracy)
    if "square" in names and names.index("square") > 0:
        before = attack_accuracy[names[names.index("square") - 1]]
        gain = before - attack_accuracy["square"]
        checks.append(Check("square_not_stronger_than_whitebox", gain <= 0.02 + 1e-12,
                            f"Square lowered accuracy by {gain:.4f} after the white-box attacks (limit 0.02)"))

    sweep: list[dict] = []
    if config.eps_sweep:
        for eps in sorted(set(float(e) for e in config.eps_sweep)):
            if abs(eps - config.eps) < 1e-12:
                accuracy = robust_accuracy
            elif eps == 0:
                accuracy = float((main.clean_correct == 1).float().mean())
            else:
                result = run_suite(model, data, config.attacks_for(eps, draws), eps, config.norm, config.batch_size,
                                   config.seed, draws, device, progress, f"eps {eps:.4g}")
                accuracy = float(result.robust.float().mean())
            sweep.append({"eps": eps, "robust_accuracy": accuracy})
        rises = [(a["eps"], b["eps"]) for a, b in zip(sweep, sweep[1:]) if b["robust_accuracy"] > a["robust_accuracy"] + 1.0 / max(n, 1)]
        checks.append(Check("robust_accuracy_non_increasing_in_eps", not rises,
                            "monotone over " + ", ".join(f"{s['eps']:.4g}" for s in sweep) if not rises
                            else f"accuracy rises from eps {rises[0][0]:.4g} to {rises[0][1]:.4g}"))

    if config.large_eps_samples > 0 and n:
        subset = data.head(config.large_eps_samples)
        transferred = config.attack_model is not None  # the source model is deterministic: one draw
        big = PGD(LARGE_EPS, "linf", 1 if transferred else draws, steps=20, alpha=LARGE_EPS / 4)
        if transferred:
            big = Transferred(big, config.attack_model)
        result = run_suite(model, subset, [big], LARGE_EPS, "linf", config.batch_size, config.seed, draws, device, progress, "eps 0.5 check")
        accuracy = float(result.robust.float().mean())
        checks.append(Check("near_zero_accuracy_at_large_eps", accuracy <= 0.05,
                            f"PGD-20 at L∞ eps {LARGE_EPS} leaves {accuracy:.4f} accuracy on {len(subset)} points (limit 0.05)"))

    buffers_after = _buffers(model)
    changed = [k for k in buffers_before if not torch.equal(buffers_before[k], buffers_after[k])]
    checks.append(Check("eval_mode_and_buffers_unchanged", not model.training and not changed,
                        "model in eval mode; all buffers unchanged" if not changed else f"buffers changed: {', '.join(changed[:3])}"))
    model.train(was_training)

    per_class = {}
    for label, name in enumerate(data.class_names):
        mask = data.y == label
        count = int(mask.sum())
        if count:
            per_class[str(label)] = {"name": name, "n": count,
                                     "clean_accuracy": float(main.clean_correct[mask].mean()),
                                     "robust_accuracy": float(main.robust[mask].float().mean())}
    info = getattr(model, "info", None)
    extra = {}
    describe = getattr(model, "report_section", None)  # e.g. AToP's composite: its transform, and fixed or random
    if describe is not None:
        extra["purifier"] = describe()
    if config.attack_model is not None:
        extra["transferred"] = {"source": getattr(getattr(config.attack_model, "info", None), "arch", type(config.attack_model).__name__),
                                "summary": "attacks computed on the classifier alone and scored on the whole model "
                                           "(classifier-only, BPDA): an optimistic number, not a robustness claim"}
    if config.protected:
        from .protected import protected_metrics

        extra["protected"] = protected_metrics(data.y, main.clean_correct, main.robust_prediction, config.protected,
                                               config.protected_cost, num_classes or len(data.class_names), main.robust)
        extra["protected"]["names"] = [data.class_names[i] for i in config.protected if i < len(data.class_names)]
    return Report(
        schema_version=SCHEMA_VERSION,
        clean_accuracy=clean_accuracy,
        robust_accuracy=robust_accuracy,
        attacks=attack_accuracy,
        per_class=per_class,
        n=n,
        eps=config.eps,
        norm=config.norm,
        suite=config.suite_name(),
        attack_list=[repr(a) for a in attacks],
        seed=config.seed,
        randomized=randomized,
        eot_samples=draws,
        model_sha256=getattr(info, "sha256", None),
        data_sha256=data.sha256(),
        model={"path": getattr(info, "path", None), "arch": getattr(info, "arch", None),
               "num_classes": getattr(info, "num_classes", None), "input_size": getattr(info, "input_size", None),
               "input_size_source": getattr(info, "input_size_source", None)},
        data={"source": data.source, "n": n, "image_size": list(data.image_size), "channels": data.channels, "notes": data.notes},
        normalization={"mean": list(getattr(info, "mean", ()) or ()), "std": list(getattr(info, "std", ()) or ()),
                       "source": getattr(info, "normalization_source", "unknown")},
        versions={"hardenctl": __version__, "torch": torch.__version__, "timm": timm.__version__, "python": platform.python_version()},
        device=str(device),
        eps_sweep=sweep,
        checks=checks,
        seconds=time.perf_counter() - started,
        extra=extra,
    )
