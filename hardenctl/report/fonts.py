"""Fonts for the names drawn in matplotlib pictures: class names are data, in any script.

matplotlib's default font (DejaVu Sans) has no CJK glyphs: a class called 猫 is drawn as a box, and matplotlib warns
on stderr once per missing character, which a CI log then shows as if something were wrong with the run. So a
picture asks for installed fonts that have the missing glyphs (matplotlib falls back from one family to the next,
character by character); where no installed font has them, the boxes are drawn and only that warning is silenced
(:func:`quiet_missing_glyphs`): it is about the machine's fonts, not the report, and says nothing the picture does not.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from typing import Any, Iterable, Iterator

# matplotlib >= 3.6 says "Glyph 29483 (\N{CJK UNIFIED IDEOGRAPH-732B}) missing from font(s) DejaVu Sans.",
# older versions "Glyph 29483 missing from current font."
MISSING_GLYPH = r"Glyph \d+ .*missing from (current font|font\(s\))"
PLACEHOLDER_FONTS = ("Last Resort",)  # draws a placeholder for every code point: no better than the box


@functools.lru_cache(maxsize=None)
def _charmap(path: str) -> frozenset[int]:
    """The code points the font file at ``path`` has glyphs for (empty when it cannot be read)."""
    from matplotlib.ft2font import FT2Font

    try:
        return frozenset(FT2Font(path).get_charmap())
    except Exception:  # noqa: BLE001 - an unreadable font file is a font without glyphs, never a failed report
        return frozenset()


def _weight(entry: Any) -> int:
    """A font entry's numeric weight (400 regular), whatever matplotlib version recorded it."""
    return entry.weight if isinstance(entry.weight, int) else 400


def fonts_for(texts: Iterable[str]) -> dict[str, Any]:
    """Text keyword arguments (``family``) naming the default font and, after it, installed fonts that have the
    glyphs it lacks for ``texts``; {} when it has them all or no installed font has any of the rest."""
    from matplotlib import font_manager

    default = font_manager.findfont(font_manager.FontProperties())
    needed = {ord(char) for text in texts for char in text if char.isprintable() and not char.isspace()}
    needed -= _charmap(default)
    if not needed:
        return {}
    candidates = sorted(
        (entry for entry in font_manager.fontManager.ttflist if not entry.name.startswith(PLACEHOLDER_FONTS)),
        key=lambda entry: (entry.style != "normal", abs(_weight(entry) - 400), entry.name),
    )
    families: list[str] = []
    for entry in candidates:
        covered = needed & _charmap(entry.fname)
        if covered and entry.name not in families:
            families.append(entry.name)
            needed -= covered
        if not needed:
            break
    if not families:
        return {}
    return {"family": [font_manager.FontProperties(fname=default).get_name(), *families]}


@contextlib.contextmanager
def quiet_missing_glyphs() -> Iterator[None]:
    """Drawing inside this block does not warn about glyphs no installed font has (other warnings still show)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=MISSING_GLYPH, category=UserWarning)
        yield
