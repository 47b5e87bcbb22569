"""What the report's schema and every renderer share: interval helpers, the words for a gate's basis, printable text.

This module sits below :mod:`hardenctl.report.schema`, the content and the renderers and imports none of them, so no
renderer needs the schema at run time.
"""

from __future__ import annotations

from typing import Any, Mapping

from ..stats import wilson_interval

# matplotlib text options for anything that may hold a name: drawn as spelled, never as mathtext ($...$) or LaTeX
MATPLOTLIB_PLAIN = {"parse_math": False, "usetex": False}
GATE_BASIS = {
    "point": "point estimate",
    "lower95": "95% lower bound",
    "paired": "paired, per sample",
    "rates": "rates",
    "sequential": "anytime-valid bound (sequential)",
}


def clean_text(value: object) -> str:
    """``value`` as printable text: names are data, and a file name may hold anything but ``/``.

    A control character (a newline would end a Markdown table row; most are invalid in XML) is shown as its Python
    escape (``\\n``, ``\\x07``), a byte that was not UTF-8 (decoded by the file system as a lone surrogate, which no
    UTF-8 file can hold) as ``\\xNN``. Markup characters are left alone: each renderer escapes its own syntax.
    """
    text = str(value)
    if text.isprintable():
        return text
    out = []
    for char in text:
        if char.isprintable():
            out.append(char)
        elif 0xDC80 <= ord(char) <= 0xDCFF:  # os.fsdecode's surrogateescape for the byte ord(char) - 0xDC00
            out.append(f"\\x{ord(char) - 0xDC00:02x}")
        else:
            out.append(char.encode("unicode_escape").decode("ascii"))
    return "".join(out)


def format_eps(eps: float | None, decimal: bool = True) -> str:
    """ε as people write it: ``4/255 (0.015686)`` when it is a whole number of 8-bit grey levels and has no short
    decimal form, else the decimal (``0.1``, ``0.2`` rather than ``51/255``)."""
    if eps is None:
        return "?"
    value = float(eps)
    levels = value * 255
    short = f"{value:.3f}".rstrip("0").rstrip(".")
    if value > 0 and abs(levels - round(levels)) < 1e-4 * max(1.0, levels) and abs(float(short) - value) > 1e-9:
        return f"{round(levels)}/255 ({value:.6f})" if decimal else f"{round(levels)}/255"
    return f"{value:.6g}"


def plural(count: int | float, noun: str, nouns: str | None = None) -> str:
    """``1 sample``, ``2 samples``, ``0 samples``: a count with its noun agreeing (``nouns``: an irregular plural)."""
    return f"{count} {noun if count == 1 else nouns or noun + 's'}"


def format_points(change: float) -> str:
    """A change between two rates in percentage points, ``+49.00 pts``: never ``%``, which would read as a relative
    change. Rounded first, so a float's ``-1e-17`` shows as ``+0.00 pts``, not ``-0.00 pts``."""
    return f"{round(100 * change, 2) + 0.0:+.2f} pts"


def pair(interval: tuple[float, float] | None) -> list[float] | None:
    return None if interval is None else [interval[0], interval[1]]


def class_interval(entry: Mapping[str, Any], key: str) -> list[float] | None:
    """The 95% Wilson interval of one per-class accuracy (``entry`` has ``n`` and the accuracy)."""
    value = entry.get(key)
    return None if value is None else pair(wilson_interval(min(1.0, max(0.0, float(value))), int(entry["n"])))


def span(interval: Any, brackets: bool = True) -> str:
    """``(41.9–48.1)``: an interval in percent, one decimal."""
    if interval is None:
        return ""
    text = f"{100 * interval[0]:.1f}–{100 * interval[1]:.1f}"
    return f"({text})" if brackets else f"{text}%"


def correct_of(counts: Mapping[str, Any], metric: str) -> str:
    """``23/24``: how many samples a rate was divided from (``Report.counts``); "" when the report has no counts
    (written before they were recorded). ``metric``: ``clean``, ``robust`` or an attack's name."""
    if not counts or "n" not in counts:
        return ""
    if metric in ("clean", "robust"):
        correct = counts.get(f"{metric}_correct")
    else:
        correct = (counts.get("attacks") or {}).get(metric)
    if correct is None:
        return ""
    # a randomised model's clean count is a sum of per-sample fractions of draws
    number = str(int(correct)) if float(correct).is_integer() else f"{float(correct):.2f}"
    return f"{number}/{counts['n']}"


def sequential_note(report: Any, gate: Any) -> str:
    """``decided after 160 of 1,000 images (anytime-valid bounds 0.5210–0.7100 on robust accuracy, α 0.05)``: what a
    gate of a ``--sequential`` run that stopped early rests on; empty for any other gate."""
    section = getattr(report, "sequential", None) or {}
    entry = (section.get("gates") or {}).get(getattr(gate, "name", None))
    if not entry or not entry.get("decided_at") or getattr(gate, "basis", None) != "sequential":
        return ""
    low, high = entry["bounds"]
    return (
        f"decided after {entry['decided_at']:,} of {section['max_n']:,} images (anytime-valid bounds "
        f"{low:.4f}–{high:.4f} on {str(entry['quantity']).replace('_', ' ')}, α {section['alpha']:g})"
    )
