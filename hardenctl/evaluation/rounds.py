"""``--sequential``: attack the images round by round in a seeded random order; stop once every gate is decided.

Why rounds of a random order: after t images the results are a simple random sample, without replacement, of the n
images of the fixed-n run, so an anytime-valid confidence sequence for each gated quantity (:mod:`hardenctl.sequential`)
covers the value the full run would measure, at every round at once. A gate is decided when its sequence lies wholly
on one side of the gate's cut; the run stops when every gate is; a gate never decided runs to n and is judged there
exactly as without ``--sequential``. An image's outcome must not depend on the order, so the attacks draw from each
image's own random stream (:mod:`hardenctl.attacks.streams`).

A round is one batch per process: batch b of the order runs on rank b mod N, as in any evaluation, the results are
gathered before the decision, so every rank stops at the same round, and a resumed run replays the finished batches
from its state and stops where the killed one would have.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from .. import sequential as cs
from ..data import Dataset
from .sequential_plan import DROP_GATES, MIN_GATES, ORDER_SEED, SequentialPlan, Target
from .suite import SuiteResult


def evaluation_order(n: int, seed: int) -> Tensor:
    """The seeded random order the images are attacked in (the same on every rank and after a resume)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + ORDER_SEED))


@dataclass
class Decision:
    gate: str
    quantity: str
    threshold: float
    cut: float  # on the quantity's scale: the full run passes when the quantity >= cut (a minimum) or <= cut (a drop)
    at_least: bool
    decision: str | None = None
    decided_at: int | None = None
    bounds: tuple[float, float] | None = None


class Tracker:
    """The confidence sequences of one run and the decisions they reach, round by round."""

    def __init__(self, plan: SequentialPlan, labels: Tensor, protected: list[int] | None, randomized: bool):
        self.plan, self.n = plan, len(labels)
        self.protected = torch.isin(labels, torch.tensor(protected or [], dtype=labels.dtype))
        self.decisions = [self._decision(t) for t in plan.targets]
        quantities = {d.quantity for d in self.decisions}
        alpha = cs.split_alpha(plan.alpha, max(len(quantities), 1))
        self.sequences: dict[str, cs.BinaryWoRCS | cs.BoundedWoRCS] = {}
        for quantity in sorted(quantities):
            population = int(self.protected.sum()) if quantity.startswith("protected") else self.n
            if population == 0:  # no protected image: nothing to decide early; the full run judges it
                continue
            if quantity.endswith("_drop"):
                self.sequences[quantity] = cs.BoundedWoRCS(population, alpha, -1.0, 1.0)
            elif quantity == "clean_accuracy" and randomized:  # fractions of EOT draws
                self.sequences[quantity] = cs.BoundedWoRCS(population, alpha)
            else:
                self.sequences[quantity] = cs.BinaryWoRCS(population, alpha)
        self.rounds: list[dict[str, Any]] = []

    def _decision(self, target: Target) -> Decision:
        if target.gate in MIN_GATES:
            quantity = MIN_GATES[target.gate]
            return Decision(target.gate, quantity, target.threshold, float("nan"), True)
        if target.basis == "rates":  # base − new <= max_drop: a minimum on the new accuracy
            metric = DROP_GATES[target.gate].replace("_drop", "_accuracy")
            index = 0 if metric == "clean_accuracy" else 1
            threshold = self.plan.baseline_rates[index] - target.threshold - cs.DROP_TOLERANCE
            return Decision(target.gate, metric, threshold, float("nan"), True)
        return Decision(
            target.gate, DROP_GATES[target.gate], target.threshold, target.threshold + cs.DROP_TOLERANCE, False
        )

    def cut_for(self, decision: Decision, sequence: cs.BinaryWoRCS | cs.BoundedWoRCS) -> float:
        """The cut on the sequence's own scale (a total for counts, a mean for values), the fixed-n gate's rule."""
        if not decision.at_least:
            return decision.cut
        target = next(t for t in self.plan.targets if t.gate == decision.gate)
        basis = "lower" if target.basis == "lower95" else "point"
        if isinstance(sequence, cs.BinaryWoRCS):
            return cs.count_cut(decision.threshold, basis, sequence.population)
        return cs.mean_cut(decision.threshold, basis, sequence.population)

    def update(self, ids: Tensor, clean: Tensor, robust: Tensor) -> None:
        """One round: the images ``ids`` (evaluated-set indices, in evaluation order) and their clean and robust
        results."""
        for quantity, sequence in self.sequences.items():
            values = self._values(quantity, ids, clean, robust)
            if isinstance(sequence, cs.BinaryWoRCS):
                sequence.update(int(values.sum()), len(values))
            else:
                sequence.update(values.double().numpy())
        evaluated = self.rounds[-1]["n"] + len(ids) if self.rounds else len(ids)
        for decision in self.decisions:
            sequence = self.sequences.get(decision.quantity)
            if decision.decision is not None or sequence is None:
                continue
            verdict = sequence.decide(self.cut_for(decision, sequence), decision.at_least)
            if verdict is not None:
                decision.decision, decision.decided_at, decision.bounds = verdict, evaluated, sequence.bounds()
        self.rounds.append(cs.round_record(evaluated, self.sequences))

    def _values(self, quantity: str, ids: Tensor, clean: Tensor, robust: Tensor) -> Tensor:
        if quantity == "clean_accuracy":
            return clean.double()
        if quantity == "robust_accuracy":
            return robust.double()
        if quantity == "protected_robust_accuracy":
            return robust[self.protected[ids]].double()
        baseline = self.plan.baseline_clean if quantity == "clean_drop" else self.plan.baseline_robust
        now = clean if quantity == "clean_drop" else robust
        return torch.tensor([float(baseline[i]) for i in ids.tolist()], dtype=torch.float64) - now.double()

    @property
    def decided(self) -> bool:
        return all(d.decision is not None for d in self.decisions)

    def section(self, evaluated: int) -> dict[str, Any]:
        """The report's ``sequential`` section."""
        stopped = evaluated < self.n
        return {
            "max_n": self.n,
            "n": evaluated,
            "decided_at": evaluated if stopped else None,
            "alpha": self.plan.alpha,
            "method": {q: s.method for q, s in self.sequences.items()},
            "gates": {
                d.gate: {
                    "quantity": d.quantity,
                    "threshold": d.threshold,
                    "decision": d.decision,
                    "decided_at": d.decided_at,
                    "bounds": list(d.bounds) if d.bounds else None,
                    "at_least": d.at_least,
                }
                for d in self.decisions
            },
            "rounds": self.rounds,
        }

    def status(self) -> str:
        """One line after a round: each gate decided, or its bounds so far."""
        parts = []
        for d in self.decisions:
            sequence = self.sequences.get(d.quantity)
            if d.decision is not None:
                parts.append(f"{d.gate} {d.decision.upper()} (decided after {d.decided_at})")
            elif sequence is not None:
                low, high = sequence.bounds()
                parts.append(f"{d.gate} undecided: {d.quantity} within [{low:.3f}, {high:.3f}]")
        return "; ".join(parts)


def run_rounds(
    data: Dataset,
    order: Tensor,
    round_size: int,
    tracker: Tracker,
    run_prefix: Callable[[Dataset, Tensor, str], SuiteResult],
    log: Callable[[str], None] | None = None,
) -> tuple[SuiteResult, Tensor]:
    """Attack ``data`` round by round in ``order`` (:func:`evaluation_order`) until the tracker has decided every gate
    (or every image is done); ``run_prefix(images, their ids, label)`` runs the suite on a prefix of the order,
    carrying the batches earlier rounds finished. Returns the suite's result on the evaluated prefix (in the order)
    and that prefix's indices."""
    n = len(data)
    ordered = data.take(order)
    done, result = 0, None
    while done < n:
        end = min(done + round_size, n)
        result = run_prefix(
            ordered.head(end), order[:end], f"attacks, round {len(tracker.rounds) + 1}: images {done + 1}-{end} of {n}"
        )
        tracker.update(order[done:end], result.clean_correct[done:end], result.robust[done:end])
        if log is not None:
            log(f"round {len(tracker.rounds)} ({end} of {n} images): {tracker.status()}")
        done = end
        if tracker.decided:
            break
    assert result is not None
    return result, order[:done]
