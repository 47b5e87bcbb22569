"""What determines an evaluation's result (echoed into the report), and attacks computed on another model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from ..attacks import Attack
from ..attacks.suites import build_custom, build_suite
from ..errors import UserError
from .sequential_plan import SequentialPlan, check_plan

PRECISIONS = ("auto", "fp32", "bf16")

Progress = Callable[
    ..., None
]  # (stage, done, total, metrics: dict | None = None); metrics["detail"] at an attack boundary


@dataclass
class EvalConfig:
    """Everything that determines an evaluation's result (echoed into the report)."""

    eps: float = 8 / 255
    norm: str = "linf"
    suite: str = "standard"
    attacks: Sequence[str] | None = None  # custom list overrides the suite
    n: int | None = 1000
    batch_size: int | str = 128  # or "auto": the largest that fits (see batching.py), recorded in the report
    seed: int = 0
    eot_samples: int = 20
    eps_sweep: Sequence[float] | None = None
    apgd_steps: int = 100
    square_queries: int = 5000
    large_eps_samples: int = 100  # points used by the "accuracy at ε = 0.5" check; 0 disables it
    randomized: bool | None = None  # None: detect by repeated forward passes
    protected: Sequence[int] | None = None  # class ids whose metrics go to report.extra["protected"]
    protected_cost: float = 10.0  # cost of misclassifying a protected class (the cost-sensitive recipe's C)
    attack_model: nn.Module | None = (
        None  # attacks differentiate this model instead (e.g. AToP's classifier alone: BPDA)
    )
    precision: str = (
        "auto"  # the attacks' search: auto (bf16 on a CUDA GPU that has it, else fp32), fp32, bf16; verdicts are fp32
    )
    sequential: SequentialPlan | None = (
        None  # attack in a seeded random order, round by round, until every gate is decided
    )

    def __post_init__(self) -> None:
        # words are case-insensitive everywhere (--eval-precision BF16 as --batch-size AUTO); class names are not words
        self.precision, self.norm, self.suite = word(self.precision), word(self.norm), word(self.suite)
        self.batch_size = word(self.batch_size)
        if self.attacks is not None:
            self.attacks = [word(name) for name in self.attacks if str(name).strip()]
            if not self.attacks:
                raise UserError(
                    "--attacks names no attack", "pass e.g. --attacks apgd-ce,square, or leave it out for --suite"
                )
        if self.sequential is not None:
            check_plan(self.sequential)
            if self.eps_sweep:
                raise UserError(
                    "--sequential stops when the gates are decided; an --eps-sweep needs every image at every ε",
                    "drop --eps-sweep, or run it without --sequential",
                )
        if self.norm not in ("linf", "l2"):
            raise UserError(f"--norm must be linf or l2, got {self.norm!r}", "pass --norm linf or --norm l2")
        for value, option in (
            (self.n, "--num-samples"),
            (self.eot_samples, "--eot-samples"),
            (self.apgd_steps, "--apgd-steps"),
            (self.square_queries, "--square-queries"),
        ):
            if value is not None and value < 1:
                raise UserError(f"{option} must be at least 1, got {value}", f"pass a positive {option}")
        if self.precision not in PRECISIONS:
            raise UserError(f"unknown --eval-precision {self.precision!r}", f"use one of {', '.join(PRECISIONS)}")
        if self.batch_size != "auto" and (not isinstance(self.batch_size, int) or self.batch_size < 1):
            raise UserError(
                f"--batch-size must be a positive whole number or auto, got {self.batch_size!r}",
                "pass e.g. --batch-size 128 or --batch-size auto",
            )

    def attacks_for(self, eps: float, draws: int) -> list[Attack]:
        """The attacks of one run; with ``attack_model`` each runs on that model and is scored on the evaluated one."""
        if self.attack_model is None:
            return self.build_attacks(eps, draws)
        return [Transferred(attack, self.attack_model) for attack in self.build_attacks(eps, 1)]

    def suite_name(self) -> str:
        return "custom" if self.attacks else self.suite

    def build_attacks(self, eps: float, eot_samples: int) -> list[Attack]:
        if self.attacks:
            attacks = build_custom(self.attacks, eps, self.norm, eot_samples, self.apgd_steps, self.square_queries)
        else:
            attacks = build_suite(
                self.suite, eps, self.norm, eot_samples, self.seed, self.apgd_steps, self.square_queries
            )
        if self.precision == "bf16":
            for attack in attacks:
                attack.search_dtype = torch.bfloat16
        return attacks


def word(value: object) -> object:
    """A word option as hardenctl compares it: trimmed and lower-case (anything else is returned as it is)."""
    return value.strip().lower() if isinstance(value, str) else value


def search_precision(requested: str, device: torch.device, suite: str = "standard") -> str:
    """The precision the attacks search in: ``fp32`` or ``bf16`` (``auto``: bf16 on a CUDA GPU that supports it).

    Why bf16 only on a GPU by default: there it doubles the tensor-core throughput, and every point the search calls
    fooled is re-scored in fp32 before the attack acts on it, so the verdicts stay fp32-exact. Most CPUs have no bf16
    arithmetic (autocast then emulates it, slower than fp32); ``bf16`` still runs there when asked.
    """
    if requested not in PRECISIONS:
        raise UserError(f"unknown --eval-precision {requested!r}", f"use one of {', '.join(PRECISIONS)}")
    if suite == "autoattack":
        if requested == "bf16":
            raise UserError(
                "--eval-precision bf16 searches with hardenctl's own attacks; the reference AutoAttack "
                "(--suite autoattack) runs in fp32",
                "drop --eval-precision, or use --suite standard",
            )
        return "fp32"
    if requested == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    return requested


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
        self.inner.streams = self.streams  # --sequential: the images' own random streams
        return self.inner(self.source, x, y)

    def __repr__(self) -> str:
        source = getattr(getattr(self.source, "info", None), "arch", None) or type(self.source).__name__
        return f"{self.inner!r} computed on {source} alone (transferred)"
