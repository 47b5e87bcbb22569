"""Recipes: a name → class registry and loading a recipe from YAML plus ``--set`` overrides.

``--recipe mart`` resolves to the repository's ``recipes/mart.yaml``; any other value is a
path to a YAML file. The file's ``recipe:`` key names the class (``recipe: mart`` →
:class:`hardenctl.recipes.mart.Mart`); every other key is a parameter of that class's
config, validated once. The YAML comments are the parameters' documentation
(``hardenctl recipes mart`` prints them).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from ..errors import UserError
from .advamd import AdvAmd
from .atop import Atop
from .base import LossFn, Recipe, RecipeConfig
from .cost_sensitive import CostSensitive
from .fsr import Fsr
from .mart import Mart
from .pgd_at import PGDAT, Standard
from .trades import Trades

RECIPE_DIR = Path(__file__).resolve().parent.parent.parent / "recipes"
REGISTRY: dict[str, type[Recipe]] = {cls.name: cls for cls in (Mart, PGDAT, Trades, Standard, Fsr, CostSensitive, AdvAmd, Atop)}


def recipe_names() -> list[str]:
    """Names of the built-in recipe files (``recipes/*.yaml``)."""
    return sorted(path.stem for path in RECIPE_DIR.glob("*.yaml"))


def recipe_path(spec: str | Path) -> Path:
    """``mart`` → ``recipes/mart.yaml``; an existing path is taken as is."""
    builtin = RECIPE_DIR / f"{spec}.yaml"
    if isinstance(spec, str) and "/" not in spec and builtin.is_file():
        return builtin
    path = Path(spec)
    if path.is_file():
        return path
    raise UserError(f"unknown recipe {str(spec)!r}", f"use one of {', '.join(recipe_names())} or a path to a recipe YAML file")


def read_recipe_file(path: Path) -> tuple[type[Recipe], dict[str, Any]]:
    """The class a recipe file names and its parameter values (not yet validated)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"cannot read recipe file {path} ({reason})", "fix the YAML syntax") from None
    if not isinstance(data, dict) or "recipe" not in data:
        raise UserError(f"recipe file {path} has no 'recipe:' key", f"start it with e.g. 'recipe: mart' (one of {', '.join(REGISTRY)})")
    values = dict(data)
    name = values.pop("recipe")
    if name not in REGISTRY:
        raise UserError(f"recipe file {path}: unknown recipe class {name!r}", f"set recipe: to one of {', '.join(REGISTRY)}")
    return REGISTRY[name], values


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """``["beta=5", "milestones=[0.5,0.75]"]`` → ``{"beta": 5, "milestones": [0.5, 0.75]}`` (YAML values)."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserError(f"--set {item!r} is not key=value", "pass e.g. --set beta=5")
        try:
            overrides[key] = yaml.safe_load(text) if text.strip() else text
        except yaml.YAMLError:
            overrides[key] = text
    return overrides


def load_recipe(spec: str | Path, overrides: Mapping[str, Any] | None = None) -> Recipe:
    """The recipe ``spec`` names, its config = file values with ``overrides`` on top, validated."""
    path = recipe_path(spec)
    cls, values = read_recipe_file(path)
    cls.Config.from_mapping(values, f"recipe file {path}")
    overrides = dict(overrides or {})
    cls.Config.from_mapping(overrides, f"--set for recipe {cls.name}")
    return cls(cls.Config.from_mapping({**values, **overrides}, f"recipe {cls.name}"), source=str(path))


@dataclass
class Parameter:
    key: str
    value: Any
    meaning: str


_COMMENTED_KEY = re.compile(r"^(?P<key>[A-Za-z_][\w-]*)\s*:[^#]*#\s?(?P<comment>.*)$")


def describe(spec: str | Path) -> tuple[type[Recipe], list[Parameter]]:
    """Every parameter of a recipe with its default (from the file) and meaning (its YAML comment)."""
    path = recipe_path(spec)
    recipe = load_recipe(path)
    comments = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = _COMMENTED_KEY.match(line)
        if match:
            comments[match["key"]] = match["comment"].strip()
    return type(recipe), [Parameter(key, value, comments.get(key, "")) for key, value in recipe.config.to_dict().items()]


__all__ = ["CostSensitive", "LossFn", "PGDAT", "REGISTRY", "RECIPE_DIR", "Mart", "Parameter", "Recipe", "RecipeConfig", "Standard", "Trades",
           "describe", "load_recipe", "parse_overrides", "recipe_names", "recipe_path", "read_recipe_file"]
