"""Recipes: a name → class registry and loading a recipe from YAML plus ``--set`` overrides.

``--recipe mart`` resolves to the repository's ``recipes/mart.yaml``; any other value is a
path to a YAML file. The file's ``recipe:`` key names the class (``recipe: mart`` →
:class:`hardenctl.recipes.mart.Mart`); every other key is a parameter of that class's
config, validated once. The YAML comments are the parameters' documentation
(``hardenctl recipes mart`` prints them).
"""
from __future__ import annotations

import ast
import importlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping

import yaml

from ..errors import UserError

if TYPE_CHECKING:
    from .base import Recipe

RECIPE_DIR = Path(__file__).resolve().parent.parent.parent / "recipes"
# name (the YAML's `recipe:`) -> (module in this package, class). Imported on first use: recipe modules
# import torch, which takes seconds, and `hardenctl recipes` must answer at once.
CLASSES: dict[str, tuple[str, str]] = {
    "mart": ("mart", "Mart"), "pgd-at": ("pgd_at", "PGDAT"), "trades": ("trades", "Trades"), "standard": ("pgd_at", "Standard"),
    "fsr": ("fsr", "Fsr"), "cost-sensitive": ("cost_sensitive", "CostSensitive"), "advamd": ("advamd", "AdvAmd"),
    "atop": ("atop", "Atop"),
}
_EXPORTS = {cls: module for module, cls in CLASSES.values()} | {"Recipe": "base", "RecipeConfig": "base", "LossFn": "base"}


class _Registry(Mapping):
    """name -> Recipe class, importing a recipe's module only when it is looked up."""

    def __getitem__(self, name: str) -> type:
        module, cls = CLASSES[name]
        return getattr(importlib.import_module(f".{module}", __name__), cls)

    def __iter__(self) -> Iterator[str]:
        return iter(CLASSES)

    def __len__(self) -> int:
        return len(CLASSES)


REGISTRY: Mapping[str, type] = _Registry()


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def recipe_card(name: str) -> dict[str, str]:
    """A recipe's class path, ``paper`` and ``improves``, read from its source without importing it (or torch)."""
    module, cls = CLASSES[name]
    tree = ast.parse((Path(__file__).parent / f"{module}.py").read_text(encoding="utf-8"))
    card = {"class": f"{__name__}.{module}.{cls}", "paper": "", "improves": ""}
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == cls:
            for item in node.body:
                if (isinstance(item, ast.Assign) and len(item.targets) == 1 and isinstance(item.targets[0], ast.Name)
                        and item.targets[0].id in ("paper", "improves") and isinstance(item.value, ast.Constant)):
                    card[item.targets[0].id] = str(item.value.value)
    return card


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


def read_recipe_values(path: Path) -> tuple[str, dict[str, Any]]:
    """The recipe name a file's ``recipe:`` key gives and its parameter values (not yet validated)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"cannot read recipe file {path} ({reason})", "fix the YAML syntax") from None
    if not isinstance(data, dict) or "recipe" not in data:
        raise UserError(f"recipe file {path} has no 'recipe:' key", f"start it with e.g. 'recipe: mart' (one of {', '.join(CLASSES)})")
    values = dict(data)
    name = values.pop("recipe")
    if not isinstance(name, str) or name not in CLASSES:
        raise UserError(f"recipe file {path}: unknown recipe class {name!r}", f"set recipe: to one of {', '.join(CLASSES)}")
    return name, values


def read_recipe_file(path: Path) -> tuple[type, dict[str, Any]]:
    """The class a recipe file names and its parameter values (not yet validated)."""
    name, values = read_recipe_values(path)
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


def load_recipe(spec: str | Path, overrides: Mapping[str, Any] | None = None) -> "Recipe":
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


def describe(spec: str | Path) -> tuple[type, list[Parameter]]:
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
           "describe", "load_recipe", "parse_overrides", "recipe_card", "recipe_names", "recipe_path", "read_recipe_file",
           "read_recipe_values"]
