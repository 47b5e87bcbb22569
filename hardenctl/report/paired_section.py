"""The paired comparison with the baseline (a report's ``extra.paired``, or a comparison's): the counts, the exact
McNemar p-value and the regressed samples, the same blocks in a report and on the compare page."""

from __future__ import annotations

from typing import Any

from .blocks import Block, Heading, bold, code, paragraph, table
from .common import format_points, plural


def _clean_paragraph(clean: dict[str, Any]) -> Block:
    p = "" if clean.get("mcnemar_p") is None else f"; McNemar p = {clean['mcnemar_p']:.4g}"
    return paragraph(
        f"Clean: {plural(clean['regressed'], 'sample')} regressed (less often correct than "
        f"before), {clean['improved']} improved; paired change "
        f"{format_points(-clean['difference'])}{p}."
    )


def _regressed_blocks(shown: list[dict[str, Any]], regressed: int) -> list[Block]:
    """The regressed samples listed (at most ``REGRESSED_SHOWN`` of them), and how many more there are."""
    blocks: list[Block] = [
        Heading(3, "Regressed samples (robust in the baseline, not now)"),
        table(
            ["index", "source", "label", "adversarial prediction", "broken by"],
            [
                [r["index"], r["source_id"], r["label"], r["adversarial_prediction"], r["broken_by"] or ""]
                for r in shown
            ],
            numeric=(0, 2, 3),
            names=(4,),
        ),
    ]
    if regressed > len(shown):
        blocks.append(
            paragraph(
                f"… and {regressed - len(shown)} more ({regressed} regressed in all; "
                "every one is in the per-sample results, ",
                code("--samples"),
                ").",
            )
        )
    return blocks


def paired_blocks(paired: dict[str, Any] | None) -> list[Block]:
    """The paired comparison's blocks; none without one.

    Args:
        paired: the paired comparison (``extra.paired`` of a report, or :attr:`hardenctl.compare.Comparison.paired`).
    """
    if not paired:
        return []
    robust = paired["robust"]
    blocks: list[Block] = [
        Heading(2, "Paired comparison with the baseline"),
        paragraph(
            f"Same {plural(paired['n'], 'sample')} as ",
            code(paired["baseline"]),
            " (per-sample results ",
            code(paired["baseline_samples"]),
            "): ",
            bold(f"{robust['regressed']} regressed"),
            f" (robust before, not now), {robust['improved']} improved; paired change in robust accuracy "
            f"{format_points(-robust['difference'])}; exact McNemar p = {robust['mcnemar_p']:.4g}.",
        ),
    ]
    if paired.get("clean"):
        blocks.append(_clean_paragraph(paired["clean"]))
    shown = paired.get("regressed_samples") or []
    if shown:
        blocks += _regressed_blocks(shown, robust["regressed"])
    return blocks
