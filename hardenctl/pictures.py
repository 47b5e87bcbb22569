"""Moved to :mod:`hardenctl.report` (``report.gallery`` collects, ``report.pictures`` draws); this name stays for the
modules that import it (``hardenctl.evaluate``), which were being edited elsewhere when the report became a package."""
from __future__ import annotations

from .report.gallery import PICTURES, Gallery
from .report.pictures import grid_note, grid_png, write_grid

__all__ = ["PICTURES", "Gallery", "grid_note", "grid_png", "write_grid"]
