"""``hardenctl recipes`` and ``hardenctl info``: what the recipes and a checkpoint hold, without training anything."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from .app import app
from .options import ArchOption, Checkpoint, NumClassesOption
from .output import Output

if TYPE_CHECKING:
    from ..api.release import Description


@app.command("recipes")
def recipes_command(
    name: Annotated[Optional[str], typer.Argument(help="A recipe name or YAML path: print every parameter")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout")] = False,
) -> None:
    """List the training recipes, or every parameter of one with its default and meaning."""
    from ..api.release import describe_recipe, recipes

    out = Output(False, as_json)
    if name is None:  # read from the YAML files and the recipe sources: no torch import, so it answers at once
        _print_recipes(out, recipes(), as_json)
        return
    described = describe_recipe(name)
    if as_json:
        out.json(json.dumps(_recipe_json(described), indent=2) + "\n")
    out.table(_recipe_table(described))
    if len(described.profiles) > 1 and not as_json:
        for profile_name in described.profiles:
            out.out.print(f"{profile_name}: {described.profile_notes[profile_name]}", markup=False)


def _print_recipes(out: Output, summaries: list[dict[str, str]], as_json: bool) -> None:
    """The recipes as JSON (name, class, paper, improves) and as a table."""
    from rich.table import Table

    if as_json:
        out.json(json.dumps(summaries, indent=2) + "\n")
    table = Table(title="hardenctl recipes (recipes/*.yaml)")
    for column in ("recipe", "paper", "improves"):
        table.add_column(column)
    for summary in summaries:
        table.add_row(summary["name"], summary["paper"], summary["improves"])
    out.table(table)


def _recipe_json(described: Description) -> dict[str, Any]:
    """One recipe as ``recipes NAME --json`` prints it: its paper, its profiles, every parameter in each."""
    cls = described.cls
    return {
        "name": cls.name,
        "paper": cls.paper,
        "improves": cls.improves,
        "interpretation": cls.interpretation,
        "default_profile": described.default,
        "profiles": {p: described.profile_notes[p] for p in described.profiles},
        "parameters": [
            {"key": p.key, "default": p.value, "meaning": p.meaning, "values": p.values, "meanings": p.meanings}
            for p in described.parameters
        ],
    }


def _recipe_table(described: Description) -> Any:
    """One recipe as a table: a row per parameter, a column per profile (the default marked), then its meaning."""
    from rich.markup import escape
    from rich.table import Table

    cls, profiles, default = described.cls, described.profiles, described.default
    several = len(profiles) > 1
    if several:
        caption = f"improves {cls.improves}; --profile {' | '.join(profiles)} (default {default})"
    else:
        caption = f"improves {cls.improves}; one profile ({default})"
    table = Table(title=f"{cls.name}: {cls.paper}", caption=caption + "; override with --set key=value")
    table.add_column("parameter")
    for profile_name in profiles:
        table.add_column(profile_name + (" (default)" if several and profile_name == default else ""))
    table.add_column("meaning")
    for p in described.parameters:
        meaning = p.meaning
        if several and len(set(p.meanings.values())) > 1:  # the profiles comment the key apart: show each
            meaning = " · ".join(f"{name}: {p.meanings[name]}" for name in profiles if name in p.meanings)
        table.add_row(p.key, *(escape(_value_text(p.values[name])) for name in profiles), escape(meaning))
    return table


def _value_text(value: Any) -> str:
    """A parameter value as the YAML file writes it: lists in brackets without quotes."""
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value_text(v) for v in value) + "]"
    return str(value).lower() if isinstance(value, bool) else str(value)


@app.command("info")
def info_command(
    checkpoint: Checkpoint,
    arch: ArchOption = None,
    num_classes: NumClassesOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout")] = False,
) -> None:
    """Show a checkpoint's architecture, input, normalisation, inserted modules (e.g. FSR) and parameter counts."""
    from .. import ModelOptions
    from ..api.release import describe_lines, describe_model

    description = describe_model(checkpoint, ModelOptions(arch=arch, num_classes=num_classes))
    out = Output(False, as_json)
    if as_json:
        out.json(json.dumps(description, indent=2, default=str) + "\n")
        return
    for line in describe_lines(description):
        out.out.print(line, markup=False)
