"""``hardenctl recipes`` and ``hardenctl info``: what the recipes and a checkpoint hold, without training anything."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

from .app import app
from .options import ArchOption, Checkpoint, NumClassesOption
from .output import Output


@app.command("recipes")
def recipes_command(
    name: Annotated[Optional[str], typer.Argument(help="A recipe name or YAML path: print every parameter")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout")] = False,
) -> None:
    """List the training recipes, or every parameter of one with its default and meaning."""
    from rich.table import Table

    from ..recipes import describe_profiles, read_recipe_values, recipe_card, recipe_names, recipe_path

    out = Output(False, as_json)
    if name is None:  # read from the YAML files and the recipe sources: no torch import, so it answers at once
        cards = {n: recipe_card(read_recipe_values(recipe_path(n))[0]) for n in recipe_names()}
        if as_json:
            out.json(
                json.dumps(
                    [
                        {"name": n, "class": c["class"], "paper": c["paper"], "improves": c["improves"]}
                        for n, c in cards.items()
                    ],
                    indent=2,
                )
                + "\n"
            )
        table = Table(title="hardenctl recipes (recipes/*.yaml)")
        for column in ("recipe", "paper", "improves"):
            table.add_column(column)
        for recipe_name, card in cards.items():
            table.add_row(recipe_name, card["paper"], card["improves"])
        out.table(table)
        return
    from rich.markup import escape

    described = describe_profiles(name)
    cls, profiles = described.cls, described.profiles
    if as_json:
        out.json(
            json.dumps(
                {
                    "name": cls.name,
                    "paper": cls.paper,
                    "improves": cls.improves,
                    "interpretation": cls.interpretation,
                    "default_profile": described.default,
                    "profiles": {p: described.profile_notes[p] for p in profiles},
                    "parameters": [
                        {
                            "key": p.key,
                            "default": p.value,
                            "meaning": p.meaning,
                            "values": p.values,
                            "meanings": p.meanings,
                        }
                        for p in described.parameters
                    ],
                },
                indent=2,
            )
            + "\n"
        )
    several = len(profiles) > 1
    caption = (
        f"improves {cls.improves}; --profile {' | '.join(profiles)} (default {described.default}); override with --set key=value"
        if several
        else f"improves {cls.improves}; one profile ({described.default}); override with --set key=value"
    )
    table = Table(title=f"{cls.name}: {cls.paper}", caption=caption)
    table.add_column("parameter")
    for profile_name in profiles:
        table.add_column(profile_name + (" (default)" if several and profile_name == described.default else ""))
    table.add_column("meaning")
    for p in described.parameters:
        meaning = p.meaning
        if several and len(set(p.meanings.values())) > 1:  # the profiles comment the key apart: show each
            meaning = " · ".join(
                f"{profile_name}: {p.meanings[profile_name]}" for profile_name in profiles if profile_name in p.meanings
            )
        table.add_row(
            p.key, *(escape(_value_text(p.values[profile_name])) for profile_name in profiles), escape(meaning)
        )
    out.table(table)
    if several and not as_json:
        for profile_name in profiles:
            out.out.print(f"{profile_name}: {described.profile_notes[profile_name]}", markup=False)


def _value_text(value) -> str:
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
    from ..models.info import describe_lines, describe_model

    description = describe_model(checkpoint, ModelOptions(arch=arch, num_classes=num_classes))
    out = Output(False, as_json)
    if as_json:
        out.json(json.dumps(description, indent=2, default=str) + "\n")
        return
    for line in describe_lines(description):
        out.out.print(line, markup=False)
