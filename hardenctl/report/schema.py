"""The evaluation report: one dataclass and its versioned JSON form, at the bottom of :mod:`hardenctl.report`.

JSON is the contract CI gates read, so its keys only ever get added to; a change that
removes or renames one bumps :data:`SCHEMA_VERSION` (and adds a migration to :mod:`hardenctl.report.reader`, the one
reader that checks every report read back before use). The other outputs (Markdown, HTML, JUnit, console, pictures,
plot) are renderers in their own modules above this one, each a function that takes a Report
(:func:`hardenctl.report.render_markdown`, :func:`~hardenctl.report.render_junit`,
:func:`~hardenctl.report.render_table`, ...); they never import this module at run time, and it imports none of them.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from ..stats import wilson_interval
from .common import class_interval, pair

SCHEMA_VERSION = "1.0"


@dataclass
class Check:
    """A sanity check against false robustness; a failure is evidence of gradient masking or a bug."""

    name: str
    passed: bool
    detail: str
    value: float | None = None  # the measured statistic the rule compares ...
    limit: float | None = None  # ... with this limit (see hardenctl.evaluate), so benchmarks can tabulate them


@dataclass
class Gate:
    """A release gate: ``value`` compared with ``threshold``.

    ``basis`` says what ``value`` is: ``point`` (the measured accuracy), ``lower95`` (the lower bound of its 95%
    Wilson interval, ``--gate-on lower``), ``paired`` (a drop measured sample by sample against the baseline's
    per-sample results), ``rates`` (a drop measured between the two reports' rates); None for ``sanity_checks``.
    """

    name: str
    threshold: float
    value: float
    passed: bool
    basis: str | None = None


@dataclass
class SampleResults:
    """Per-sample results in evaluation order: what ``--samples`` writes, shards merge and paired gates compare.

    Rates are derived from these, never the other way round: shards merge by index, gates compare pairs.
    ``broken_by`` is the attack that broke the sample, None when it stayed robust or was wrong before any attack.
    """

    index: list[int]
    source_id: list[str]  # the file path for folders, "row N" for arrays
    label: list[int]
    clean_prediction: list[int]
    clean_correct: list[float]  # fraction of draws correct (0 or 1 for deterministic models)
    robust: list[bool]
    broken_by: list[str | None]
    adversarial_prediction: list[int]  # the prediction at the worst-case point (the clean one when never broken)

    def __len__(self) -> int:
        return len(self.index)

    def rows(self) -> list[dict[str, Any]]:
        return [
            dict(zip(self.__dataclass_fields__, values))
            for values in zip(*(getattr(self, f) for f in self.__dataclass_fields__))
        ]


@dataclass
class Report:
    schema_version: str
    clean_accuracy: float
    robust_accuracy: float
    attacks: dict[str, float]  # attack -> accuracy after it (cumulative worst case, in run order)
    per_class: dict[str, dict[str, Any]]
    n: int
    eps: float
    norm: str
    suite: str
    seed: int
    model_sha256: str | None
    data_sha256: str
    versions: dict[str, str]
    normalization: dict[str, Any]
    seconds: float
    checks: list[Check] = field(default_factory=list)
    gates: list[Gate] = field(default_factory=list)
    attack_list: list[str] = field(default_factory=list)
    randomized: bool = False
    eot_samples: int = 1
    model: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    eps_sweep: list[dict[str, float]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # recipe-specific sections
    accepted_checks: list[str] = field(default_factory=list)  # failed checks accepted by --no-strict / --allow-check
    samples: SampleResults | None = field(default=None, repr=False, compare=False)  # per sample; not in the JSON report
    pictures: Any = field(default=None, repr=False, compare=False)  # a hardenctl.report.Gallery; drawn, not in the JSON
    gate_on: str = "point"  # what --min-*-acc gates compared: "point" estimates or "lower" 95% bounds
    samples_file: str | None = None  # where --samples wrote this report's per-sample results (relative to the report)
    # what the rates were divided from: {"n", "clean_correct", "robust_correct", "attacks": {name: correct after it}};
    # clean_correct is a sum of per-sample fractions for a randomised model (mean over EOT draws), an int otherwise
    counts: dict[str, Any] = field(default_factory=dict)
    # attack name -> what it cost and broke over the whole run: seconds (the verdict's re-scoring included), forward
    # and backward image-passes (a batch of 46 is 46; EOT draws count), points attacked, points broken
    work: dict[str, dict[str, Any]] = field(default_factory=dict)
    # how the attacks ran, where it is not the result's business but a reader's: search_precision (fp32 or bf16),
    # verdict_precision (always fp32), precision_requested, batch_size and, for --batch-size auto, what it measured
    execution: dict[str, Any] = field(default_factory=dict)
    # --sequential: {"max_n", "n", "decided_at" (None: ran to max_n), "alpha", "method", "gates": {name: {quantity,
    # threshold, decision, decided_at, bounds, at_least}}, "rounds": [{"n", quantity: [low, high]}]}; None otherwise
    sequential: dict[str, Any] | None = None

    @property
    def stopped_early(self) -> bool:
        """Whether a ``--sequential`` run decided every gate before attacking all of its ``max_n`` images."""
        return bool(self.sequential) and self.n < int(self.sequential.get("max_n", self.n))

    # -- 95% intervals (derived from the accuracies and n, so they can never disagree with them) ---------------
    def interval(self, metric: str) -> tuple[float, float] | None:
        """95% Wilson interval of ``clean_accuracy``, ``robust_accuracy``, ``protected_robust_accuracy``,
        ``protected_clean_accuracy`` or an attack's accuracy (its name); None when there is no such accuracy."""
        if metric in ("clean_accuracy", "robust_accuracy"):
            value, n = getattr(self, metric), self.n
        elif metric.startswith("protected_"):
            section = self.extra.get("protected") or {}
            value, n = section.get(metric[len("protected_") :]), section.get("n", 0)
        else:
            value, n = self.attacks.get(metric), self.n
        return None if value is None else wilson_interval(min(1.0, max(0.0, float(value))), int(n))

    def intervals(self) -> dict[str, Any]:
        return {
            "clean_accuracy": pair(self.interval("clean_accuracy")),
            "robust_accuracy": pair(self.interval("robust_accuracy")),
            "attacks": {name: pair(self.interval(name)) for name in self.attacks},
        }

    # -- serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        # per-sample results go to their own file (--samples) and images into files: left out before asdict,
        # which would otherwise deep-copy every row and picture only to drop them
        data = asdict(dataclasses.replace(self, samples=None, pictures=None))
        data.pop("samples")
        data.pop("pictures")
        if data["sequential"] is None:  # without --sequential the report is as it always was
            data.pop("sequential")
        data["interval_method"], data["intervals"] = "wilson", self.intervals()  # 95%; see hardenctl.stats
        for entry in data["per_class"].values():
            entry["clean_interval"], entry["robust_interval"] = (
                class_interval(entry, key) for key in ("clean_accuracy", "robust_accuracy")
            )
        protected = data["extra"].get("protected")
        if isinstance(protected, dict) and "n" in protected:
            protected["clean_interval"], protected["robust_interval"] = (
                pair(self.interval(f"protected_{key}")) for key in ("clean_accuracy", "robust_accuracy")
            )
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    @property
    def failed_checks(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    @property
    def failed_gates(self) -> list[Gate]:
        return [g for g in self.gates if not g.passed]


REGRESSED_SHOWN = 50  # regressed samples listed in a report; the count is always complete
