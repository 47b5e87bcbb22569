"""The version, in a module of its own at the bottom of the package so every layer can read it without importing
the package root (which would be an arrow back up)."""

__version__ = "0.1.0"
