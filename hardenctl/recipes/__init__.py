"""Recipes: a name → class registry and loading a recipe from YAML plus ``--set`` overrides.

``--recipe mart`` resolves to the repository's ``recipes/mart.yaml`` (installed as the package
``hardenctl.recipe_files``); any other value is a path to a YAML file. The file's ``recipe:`` key
names the class (``recipe: mart`` → :class:`hardenctl.recipes.mart.Mart`); every other key is a
parameter of that class's config, validated once. The YAML comments are the parameters' documentation
(``hardenctl recipes mart`` prints them).
"""

from __future__ import annotations

import ast
import importlib
import importlib.resources
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping

import yaml

from ..errors import UserError

if TYPE_CHECKING:
    from .base import Recipe


def _recipe_dir() -> Path:
    """The built-in recipe YAMLs: the package ``hardenctl.recipe_files``, as importlib.resources finds it.

    A wheel installs it inside this package (``hardenctl/recipe_files/``); an editable install maps it onto the
    repository's ``recipes/``. A source tree run through PYTHONPATH (no install, or another checkout installed
    editable) gets nothing, or that other checkout's folder, from the import system: its own ``recipes/`` wins then.
    """
    package = Path(__file__).resolve().parent.parent
    beside = package.parent / "recipes"
    try:
        found = Path(str(importlib.resources.files("hardenctl.recipe_files"))).resolve()
    except ModuleNotFoundError:
        return beside
    if found in (package / "recipe_files", beside) or not beside.is_dir():
        return found  # this package's own (installed, or mapped by an editable install), or the only one there is
    return beside


RECIPE_DIR = _recipe_dir()
# name (the YAML's `recipe:`) -> (module in this package, class). Imported on first use: recipe modules
# import torch, which takes seconds, and `hardenctl recipes` must answer at once.
CLASSES: dict[str, tuple[str, str]] = {
    "mart": ("mart", "Mart"),
    "pgd-at": ("pgd_at", "PGDAT"),
    "trades": ("trades", "Trades"),
    "standard": ("pgd_at", "Standard"),
    "fsr": ("fsr", "Fsr"),
    "cost-sensitive": ("cost_sensitive", "CostSensitive"),
    "advamd": ("advamd", "AdvAmd"),
    "atop": ("atop", "Atop"),
}
_EXPORTS = {cls: module for module, cls in CLASSES.values()} | {
    "Recipe": "base",
    "RecipeConfig": "base",
    "LossFn": "base",
}


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
                if (
                    isinstance(item, ast.Assign)
                    and len(item.targets) == 1
                    and isinstance(item.targets[0], ast.Name)
                    and item.targets[0].id in ("paper", "improves")
                    and isinstance(item.value, ast.Constant)
                ):
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
    raise UserError(
        f"unknown recipe {str(spec)!r}", f"use one of {', '.join(recipe_names())} or a path to a recipe YAML file"
    )


def read_recipe_values(path: Path) -> tuple[str, dict[str, Any]]:
    """The recipe name a file's ``recipe:`` key gives and its parameter values (not yet validated)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"cannot read recipe file {path} ({reason})", "fix the YAML syntax") from None
    if not isinstance(data, dict) or "recipe" not in data:
        raise UserError(
            f"recipe file {path} has no 'recipe:' key",
            f"start it with e.g. 'recipe: mart' (one of {', '.join(CLASSES)})",
        )
    values = dict(data)
    name = values.pop("recipe")
    if not isinstance(name, str) or name not in CLASSES:
        raise UserError(
            f"recipe file {path}: unknown recipe class {name!r}", f"set recipe: to one of {', '.join(CLASSES)}"
        )
    return name, values


def read_recipe_file(path: Path) -> tuple[type, dict[str, Any]]:
    """The class a recipe file names and its parameter values (not yet validated; ``profiles`` still nested)."""
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


PROFILES_KEY = "profiles"
PROFILE_NAMES = ("paper", "finetune")  # the profiles a recipe file may define (RecipeConfig.profile also has "custom")


def file_profiles(values: Mapping[str, Any], path: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(the file's common values, profile name → that profile's own values); no profiles for a flat file."""
    common = dict(values)
    profiles = common.pop(PROFILES_KEY, None)
    if profiles is None:
        return common, {}
    if not isinstance(profiles, dict) or not profiles or not all(isinstance(v, dict) for v in profiles.values()):
        raise UserError(
            f"recipe file {path}: profiles must map a profile name to its values",
            "write e.g. profiles: {paper: {epochs: 90}, finetune: {epochs: 10}}",
        )
    for name, own in profiles.items():
        if name not in PROFILE_NAMES:
            raise UserError(
                f"recipe file {path}: unknown profile {name!r}", f"name profiles {' or '.join(PROFILE_NAMES)}"
            )
        both = sorted(set(own) & set(common))
        if both:
            raise UserError(
                f"recipe file {path}: profile {name} sets {', '.join(both)}, which the file also sets outside the "
                "profiles",
                "give each key once: in the common part or in every profile",
            )
        if "profile" in own:
            raise UserError(
                f"recipe file {path}: profile {name} sets 'profile'", "set the default profile once, at the top"
            )
    default = common.get("profile")
    if default not in profiles:
        raise UserError(
            f"recipe file {path}: profile: {default!r} is not one of its profiles",
            f"set profile: to one of {', '.join(profiles)} (the default when --profile is not given)",
        )
    return common, {name: dict(own) for name, own in profiles.items()}


def profile_values(values: Mapping[str, Any], path: Path, profile: str | None = None) -> dict[str, Any]:
    """The flat values of one profile of a recipe file: its common values, then that profile's (default: the
    file's ``profile``).

    A flat file (no ``profiles:``) has one set of values, named by its ``profile`` key (``custom`` when it has
    none): asking for another is an error rather than a silent fallback.
    """
    common, profiles = file_profiles(values, path)
    if not profiles:
        own = common.get("profile", "custom")
        if profile is not None and profile != own:
            raise UserError(
                f"recipe file {path} has one set of values (profile {own}), not a {profile} profile",
                "drop --profile" if own != "custom" else "drop --profile, or add a profiles: section to the file",
            )
        return common
    chosen = profile if profile is not None else common["profile"]
    if chosen not in profiles:
        raise UserError(
            f"recipe file {path} has no {chosen!r} profile", f"pass --profile {' or --profile '.join(profiles)}"
        )
    return {**common, **profiles[chosen], "profile": chosen}


def load_recipe(spec: str | Path, overrides: Mapping[str, Any] | None = None) -> "Recipe":
    """The recipe ``spec`` names, its config = the file's values for one profile with ``overrides`` on top, validated.

    ``overrides["profile"]`` (``--profile``, or ``--set profile=...``) picks the profile of a file with ``profiles:``
    (default: the file's ``profile`` key, ``finetune`` for the built-in training recipes). Every profile of the file is
    validated, so a typo in the one not chosen is caught too.
    """
    path = recipe_path(spec)
    cls, values = read_recipe_file(path)
    overrides = dict(overrides or {})
    profile = overrides.pop("profile", None)
    if profile is not None and profile not in (*PROFILE_NAMES, "custom"):
        raise UserError(f"--profile {profile!r} is not a profile", f"use one of {', '.join(PROFILE_NAMES)}")
    _, profiles = file_profiles(values, path)
    for name in profiles or [None]:
        cls.Config.from_mapping(
            profile_values(values, path, name), f"recipe file {path}" + (f" (profile {name})" if name else "")
        )
    chosen = profile_values(values, path, profile)
    cls.Config.from_mapping(overrides, f"--set for recipe {cls.name}")
    return cls(cls.Config.from_mapping({**chosen, **overrides}, f"recipe {cls.name}"), source=str(path))


@dataclass
class Parameter:
    key: str
    value: Any  # in the default profile
    meaning: str  # its comment (a profile key: the default profile's line)
    values: dict[str, Any] = field(default_factory=dict)  # profile → value (one entry for a flat file)
    meanings: dict[str, str] = field(default_factory=dict)  # profile → comment, where the profiles comment it apart


_KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][\w-]*)\s*:(?P<value>[^#]*?)\s*(?:#\s?(?P<comment>.*))?$")


def yaml_comments(path: Path) -> dict[str, dict[str, str]]:
    """Section → key → comment of a recipe file: ``""`` the common keys, then one section per profile (``__doc__``:
    its own line)."""
    sections: dict[str, dict[str, str]] = {"": {}}
    current = ""
    in_profiles = False
    for line in path.read_text(encoding="utf-8").splitlines():
        match = _KEY_LINE.match(line)
        if not match:
            continue
        indent, key, comment = len(match["indent"]), match["key"], (match["comment"] or "").strip()
        if indent == 0:
            in_profiles, current = key == PROFILES_KEY, ""
            if not in_profiles:
                sections[""][key] = comment
        elif in_profiles and not match["value"].strip() and key in PROFILE_NAMES and indent <= 2:
            current = key
            sections[current] = {"__doc__": comment}
        elif in_profiles and current:
            sections[current][key] = comment
    return sections


@dataclass
class Description:
    """A recipe file, every parameter with its value in each profile and its meaning (``hardenctl recipes NAME``)."""

    cls: type
    path: Path
    default: str  # the profile used without --profile
    profiles: list[str]  # its profiles, paper first; [default] for a flat file
    profile_notes: dict[str, str]  # profile → what it is (the comment on its line)
    parameters: list[Parameter]


def describe_profiles(spec: str | Path) -> Description:
    """Every parameter of a recipe in every profile of its file, with its meaning (its YAML comment)."""
    path = recipe_path(spec)
    cls, values = read_recipe_file(path)
    common, profiles = file_profiles(values, path)
    names = [p for p in PROFILE_NAMES if p in profiles] or [common.get("profile", "custom")]
    configs = {name: load_recipe(path, {"profile": name} if profiles else None).config.to_dict() for name in names}
    default = common["profile"] if profiles else names[0]
    comments = yaml_comments(path)
    parameters = []
    first = ("profile", "reinit")  # which set of values, then the recipe's own parameters and the engine's
    keys = [k for k in first if k in configs[default]] + [k for k in configs[default] if k not in first]
    for key in keys:
        value = configs[default][key]
        meanings = {name: comments.get(name, {}).get(key, "") for name in names if key in comments.get(name, {})}
        meaning = comments[""].get(key) or meanings.get(default) or next(iter(meanings.values()), "")
        parameters.append(Parameter(key, value, meaning, {name: configs[name][key] for name in names}, meanings))
    notes = {name: comments.get(name, {}).get("__doc__", "") for name in names}
    return Description(cls, path, default, names, notes, parameters)


def describe(spec: str | Path) -> tuple[type, list[Parameter]]:
    """Every parameter of a recipe with its default (from the file, default profile) and meaning (its YAML comment)."""
    description = describe_profiles(spec)
    return description.cls, description.parameters


__all__ = [
    "CostSensitive",
    "LossFn",
    "PGDAT",
    "REGISTRY",
    "RECIPE_DIR",
    "Mart",
    "Parameter",
    "Recipe",
    "RecipeConfig",
    "Standard",
    "Trades",
    "Description",
    "PROFILE_NAMES",
    "describe",
    "describe_profiles",
    "file_profiles",
    "load_recipe",
    "profile_values",
    "yaml_comments",
    "parse_overrides",
    "recipe_card",
    "recipe_names",
    "recipe_path",
    "read_recipe_file",
    "read_recipe_values",
]
