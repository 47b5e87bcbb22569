"""Recipe files: names resolve, every key is documented, and bad files or --set values are clear errors."""

from __future__ import annotations

import dataclasses
import re

import pytest

from hardenctl.errors import UserError
from hardenctl.recipes import (
    REGISTRY,
    describe,
    load_recipe,
    parse_overrides,
    read_recipe_file,
    recipe_names,
    recipe_path,
    yaml_comments,
)


def test_builtin_names_resolve_to_the_repository_yaml_and_their_class():
    assert set(recipe_names()) >= {"mart", "pgd-at", "trades", "standard"}
    for name in recipe_names():
        path = recipe_path(name)
        assert path.name == f"{name}.yaml" and path.parent.name == "recipes"
        cls, _ = read_recipe_file(path)
        assert cls is REGISTRY[name] and cls.paper and cls.improves


@pytest.mark.parametrize("name", recipe_names())
def test_every_parameter_is_in_the_yaml_with_a_comment(name):
    """Every key of the config is written in the file with a comment: in the common part, or in every profile."""
    cls, parameters = describe(name)
    path = recipe_path(name)
    text = path.read_text()
    sections = yaml_comments(path)
    profiles = [s for s in sections if s]
    assert not profiles or set(profiles) == {"paper", "finetune"}, profiles
    for field in dataclasses.fields(cls.Config):
        if field.name in sections[""]:
            assert sections[""][field.name], f"{name}.yaml: {field.name} has no comment"
            assert all(field.name not in sections[p] for p in profiles), f"{name}.yaml sets {field.name} twice"
        else:
            assert profiles, f"{name}.yaml lacks {field.name}"
            for profile in profiles:
                assert sections[profile].get(field.name), (
                    f"{name}.yaml: profile {profile} lacks {field.name} or its comment"
                )
    for profile in profiles:
        assert sections[profile]["__doc__"], f"{name}.yaml: profile {profile} has no comment saying what it is"
    assert all(p.meaning for p in parameters), [p.key for p in parameters if not p.meaning]
    assert re.search(r"^recipe: \S+\s+# hardenctl\.recipes\.", text, re.M)
    assert re.search(r"^profile: \S+\s+# ", text, re.M)  # every file says which profile its values are


def test_set_values_are_yaml_and_fractions_work():
    overrides = parse_overrides(["beta=5", "milestones=[0.5, 0.9]", "eps=8/255", "nesterov=true", "augment=none"])
    config = load_recipe("mart", overrides).config
    assert config.beta == 5.0 and config.milestones == (0.5, 0.9) and config.eps == pytest.approx(8 / 255)
    assert config.nesterov is True and config.augment == "none"


def test_a_path_works_and_the_resolved_yaml_round_trips(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("recipe: trades\nbeta: 3\nepochs: 2\n")
    recipe = load_recipe(str(path))
    assert recipe.name == "trades" and recipe.config.beta == 3.0 and recipe.config.epochs == 2
    assert recipe.config.lr == recipe.Config().lr  # keys a file leaves out take the class defaults


@pytest.mark.parametrize(
    "text, named",
    [
        ("recipe: mart\nbetta: 5\n", ["'betta'", "valid parameters:", "beta", "attack_steps"]),
        ("recipe: mart\nbeta: -1\n", ["beta=-1", "beta must be >= 0"]),
        ("recipe: mart\nschedule: linear\n", ["schedule='linear'", "step, cosine, onecycle, constant"]),
        ("recipe: mart\nepochs: 2.5\n", ["epochs=2.5", "integer"]),
        ("recipe: mart\nnesterov: maybe\n", ["nesterov='maybe'", "true"]),
        ("recipe: mart\nmilestones: 0.5\n", ["milestones=0.5", "list"]),
        ("recipe: mart\neps: 8/0\n", ["eps='8/0'"]),
        ("recipe: mystery\n", ["unknown recipe class 'mystery'", "mart"]),
        ("beta: 5\n", ["no 'recipe:' key"]),
        ("recipe: [unclosed\n", ["cannot read recipe file"]),
    ],
)
def test_bad_recipe_files_name_the_key_and_the_fix(tmp_path, text, named):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as err:
        load_recipe(str(path))
    message = str(err.value)
    assert "\n" not in message
    for fragment in named:
        assert fragment in message


def test_bad_set_values_and_names_are_errors():
    with pytest.raises(UserError, match=r"--set for recipe mart: unknown parameter 'bta'.*valid parameters: .*beta"):
        load_recipe("mart", {"bta": 1})
    with pytest.raises(UserError, match=r"lr=0 is out of range; lr must be > 0"):
        load_recipe("pgd-at", {"lr": 0})
    with pytest.raises(UserError, match="is not key=value"):
        parse_overrides(["beta"])
    with pytest.raises(UserError, match=r"unknown recipe 'marty'.*mart, pgd-at, standard, trades"):
        load_recipe("marty")


def test_recipe_cards_read_without_importing_match_the_classes():
    """`hardenctl recipes` lists paper and improves from the sources (no torch import): they must be the classes'
    own."""
    from hardenctl.recipes import recipe_card

    for name, cls in REGISTRY.items():
        card = recipe_card(name)
        assert card["paper"] == cls.paper and card["improves"] == cls.improves and card["paper"], name
        assert card["class"] == f"{cls.__module__}.{cls.__qualname__}"
