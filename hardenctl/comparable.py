"""Whether two reports measured the same thing: the ε, norm, suite, attacks and their settings, n and data a
baseline must share with the run gated against it (``eval --baseline``, ``compare``, a sequential run's plan).

Below :mod:`hardenctl.gates` and :mod:`hardenctl.compare`, which both refuse an incomparable baseline with its words.
"""

from __future__ import annotations

import re
from typing import Sequence

from .errors import UserError
from .report import Report
from .report.common import clean_text

__all__ = ["COMPARABLE", "check_comparable"]

# Fields that must agree for two reports to be compared: (report attribute, how to say it).
COMPARABLE = (
    ("eps", "ε"),
    ("norm", "norm"),
    ("suite", "suite"),
    ("attacks", "attacks"),
    ("attack_list", "attack settings"),
    ("n", "n"),
    ("data_sha256", "data (sha256 of the evaluated pixels and labels)"),
)


def check_comparable(
    current: Report | dict, baseline: Report, baseline_name: str = "the baseline", current_name: str | None = None
) -> None:
    """Refuse (UserError) a baseline made with another ε, norm, suite, attacks, n or data, naming the first difference.

    ``current`` is a report, or a dict of the fields known before evaluating (so a mismatch costs no attack time);
    ``current_name`` names it when it is a file too (``compare OLD NEW``), else it is "this evaluation". A sequential
    report is compared by the images it planned (``sequential.max_n``); a baseline that stopped early has too few
    results to compare with and is refused, naming both counts.
    """
    if baseline.stopped_early:
        planned = int(baseline.sequential["max_n"])
        raise UserError(
            f"{clean_text(baseline_name)} has results for {baseline.n} of its {planned} images (--sequential "
            f"stopped once its gates were decided), but a comparison needs all {planned}",
            "make the baseline without --sequential, or with every image evaluated",
        )
    for attribute, label in COMPARABLE:
        now = current.get(attribute) if isinstance(current, dict) else getattr(current, attribute)
        then = getattr(baseline, attribute)
        if attribute == "n" and not isinstance(current, dict) and current.sequential:
            now = int(current.sequential["max_n"])
        if attribute == "attacks":  # the attack names in run order (report.attacks maps name -> accuracy)
            now, then = (list(v) if v is not None else None for v in (now, then))
        if now is None:
            continue
        if attribute == "eps":
            same = abs(float(now) - float(then)) <= 1e-9
        elif attribute == "attack_list":
            same = not then or _attack_names(now, then) == list(then)  # older than attack_list: suite alone
        else:
            same = now == then
        if not same:
            shown = (lambda v: f"{v:.5g}") if attribute == "eps" else (lambda v: clean_text(v)[:80])
            now_text = (
                f"this evaluation uses {shown(now)}"
                if current_name is None
                else f"{clean_text(current_name)} was made with {shown(now)}"
            )
            raise UserError(
                f"{clean_text(baseline_name)} was made with {label} {shown(then)} but {now_text}",
                "compare reports made with the same --eps, --norm, --suite/--attacks, --n and data",
            )


_EPS_AND_NORM = re.compile(r"^(\w+\(eps=[^,]+, norm=\w+)[^)]*\)$")


def _attack_names(now: Sequence[str], then: Sequence[str]) -> list[str]:
    """``now``'s attacks as ``then`` names them: a report made before attacks named every setting (0.1.0's
    ``PGD(eps=0.031373, norm=linf)``) is compared on the attack, eps and norm it recorded, so a cached baseline
    stays usable after an upgrade; a report naming every setting is compared on every setting."""
    if any(_EPS_AND_NORM.sub(r"\1)", name) != name for name in then):
        return list(now)
    return [_EPS_AND_NORM.sub(r"\1)", name) for name in now]
