"""``hardenctl compare OLD.json NEW.json``: what a reviewer reads on a pull request, without running an attack.

Two reports of the same evaluation (ε, norm, suite, attacks, n, data: refused otherwise, as a baseline is) side by
side. With both per-sample files the comparison is paired, sample by sample, with the same exact McNemar test the
paired gate uses (:func:`hardenctl.paired.paired_comparison`), so ``compare`` and ``eval --baseline`` agree on the
p-value; ``max_drop`` gates the fall exactly as ``eval --baseline --max-drop`` does (exit 1).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .comparable import check_comparable
from .errors import UserError
from .gates import Baseline, describe_failure, drop_gates, load_baseline
from .paired import paired_comparison
from .report import Gate, Report
from .report.common import plural


@dataclass
class Comparison:
    """Two reports of one evaluation, their paired comparison when both per-sample files exist, and the gates."""

    old: Report
    new: Report
    old_name: str
    new_name: str
    paired: dict[str, Any] | None = None
    gates: list[Gate] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def failed_gates(self) -> list[Gate]:
        return [g for g in self.gates if not g.passed]

    def describe_failure(self, gate: Gate) -> str:
        """One line for a failed ``max_drop`` gate, naming OLD's file as what the fall is measured from."""
        return describe_failure(self.new, gate, self.old_name)

    def paired_summary(self) -> str | None:
        """``paired: 2 samples regressed, 1 improved (exact McNemar p = 0.5)``; None when the comparison is not
        paired (a side without per-sample results)."""
        if not self.paired:
            return None
        robust = self.paired["robust"]
        return (
            f"paired: {plural(robust['regressed'], 'sample')} regressed, {robust['improved']} improved "
            f"(exact McNemar p = {robust['mcnemar_p']:.4g})"
        )

    def to_dict(self) -> dict[str, Any]:
        def side(report: Report, name: str) -> dict[str, Any]:
            return {
                "report": name,
                "model_sha256": report.model_sha256,
                "clean_accuracy": report.clean_accuracy,
                "robust_accuracy": report.robust_accuracy,
                "attacks": report.attacks,
                "counts": report.counts,
                "intervals": report.intervals(),
                "failed_checks": [c.name for c in report.failed_checks],
            }

        return {
            "schema_version": "compare-1.0",
            "old": side(self.old, self.old_name),
            "new": side(self.new, self.new_name),
            "change": {
                "clean_accuracy": self.new.clean_accuracy - self.old.clean_accuracy,
                "robust_accuracy": self.new.robust_accuracy - self.old.robust_accuracy,
            },
            "eps": self.new.eps,
            "norm": self.new.norm,
            "suite": self.new.suite,
            "n": self.new.n,
            "data_sha256": self.new.data_sha256,
            "paired": self.paired,
            "gates": [vars(g) for g in self.gates],
            "notes": self.notes,
        }

    def to_json(self) -> str:
        """:meth:`to_dict` as the JSON ``compare --report`` writes and ``compare --json`` prints."""
        return json.dumps(self.to_dict(), indent=2) + "\n"


def _load(report: Report | str | Path, samples: str | Path | None, name: str) -> Baseline:
    """A side of the comparison, named by its file (as given) in every message; a Report passed in is ``name``."""
    if isinstance(report, Report):
        return Baseline(report, name, report.samples)
    return load_baseline(report, samples, "the report")  # the validating readers: the report and its per-sample file


def compare(
    old: Report | str | Path,
    new: Report | str | Path,
    *,
    old_samples: str | Path | None = None,
    new_samples: str | Path | None = None,
    max_drop: float | None = None,
) -> Comparison:
    """Compare two reports of the same evaluation, paired when both per-sample files are found.

    Args:
        old: the earlier report (a Report, or its report.json).
        new: the candidate's report.
        old_samples: OLD's per-sample results (default: found beside it, as ``--baseline`` finds them).
        new_samples: NEW's per-sample results (default: as for OLD).
        max_drop: adds the ``max_drop_*`` gates: the most each accuracy may fall (a fraction: 0.01 = one point).
    """
    if max_drop is not None and not 0 <= max_drop <= 1:
        raise UserError(f"--max-drop is a fraction in [0,1], got {max_drop}", "pass e.g. --max-drop 0.01")
    before, after = _load(old, old_samples, "old"), _load(new, new_samples, "new")
    check_comparable(after.report, before.report, before.name, current_name=after.name)
    result = Comparison(before.report, after.report, before.name, after.name)
    if before.samples is not None and after.samples is not None:
        after.report.samples = after.samples
        samples_name = str(before.samples_path) if before.samples_path else None
        result.paired = paired_comparison(
            after.report, before.samples, before.name, samples_name, current_name=after.name
        )
    else:
        missing = [name for name, side in ((before.name, before), (after.name, after)) if side.samples is None]
        result.notes.append(
            f"no per-sample results for {' and '.join(missing)} (pass --old-samples/--new-samples or keep "
            "NAME.samples.jsonl beside NAME.json): rates compared, no paired test"
        )
    if max_drop is not None:
        result.gates = drop_gates(after.report, before.report, max_drop, result.paired)
    for name, report in ((before.name, before.report), (after.name, after.report)):
        failed = [c.name for c in report.failed_checks if c.name not in report.accepted_checks]
        if failed:
            result.notes.append(f"{name} has failed sanity checks: {', '.join(failed)}")
    return result
