"""What a model declares about where it came from: its license, the Hub model it derives from, the data it was
trained on. A model card made from a report inherits these, so a fine-tune keeps its base model's license terms and
names its base model, and a RobustBench entry can tell whether the model saw data beyond the evaluated set.

Read-only and offline: a model file's folder, a timm model folder (``DIR`` or ``local-dir:DIR``) or ``hf-hub:ORG/NAME``
read from huggingface_hub's cache only (``try_to_load_from_cache``: a card is never a reason to download). Sources:
the model card's front matter (``license``, ``license_name``, ``license_link``, ``base_model``,
``base_model_relation``, ``datasets``) and ``config.json`` (``license``, and timm's ``pretrained_cfg``: ``license``,
``hf_hub_id``, ``tag``). The card wins where both say something. Nothing here raises: a model that cannot be read
declares nothing, and :attr:`Provenance.problems` says why (the card command prints it).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .sources import WEIGHT_FILES

# timm pretrained tags (``augreg2_in21k_ft_in1k``) name the data a model was trained on; these tokens (or tokens
# starting with them) name a set, read as that set's name (``in1k`` → ``imagenet-1k``) or kept as written
TAG_DATASETS = {"in1k": "imagenet-1k", "in12k": "imagenet-12k", "in21k": "imagenet-21k", "in22k": "imagenet-22k"}
TAG_DATASET_PREFIXES = (
    "laion",
    "openai",
    "ig1b",
    "ig3b",
    "jft",
    "yfcc",
    "swsl",
    "ssl",
    "dfn",
    "datacomp",
    "lvd",
    "webli",
    "metaclip",
    "merged",
)
_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+/-]{0,199}")  # a Hub id, a dataset name, a tag
# a license id as the Hub and SPDX write them (apache-2.0, cc-by-nc-4.0, openrail++, other); SPDX ids are
# case-insensitive, the Hub's are lower case, so they are compared and written lower case
LICENSE_ID = re.compile(r"[a-z0-9][a-z0-9.+-]{0,63}")
_LINK = re.compile(r"https?://[^\s<>\"'`]{1,500}")


@dataclass(frozen=True)
class Provenance:
    """What one model declares. ``hub_id``: the model's own Hub id (``hf-hub:ORG/NAME``, or a folder's
    ``pretrained_cfg.hf_hub_id``); ``base_model``/``base_model_relation``: what its card says it derives from;
    ``trained_on``: its card's ``datasets`` plus the sets its timm tag names."""

    spec: str | None = None
    hub_id: str | None = None
    license: str | None = None
    license_name: str | None = None
    license_link: str | None = None
    license_from: str | None = None  # README.md or config.json
    base_model: str | None = None
    base_model_relation: str | None = None
    trained_on: tuple[str, ...] = ()
    problems: tuple[str, ...] = field(default_factory=tuple)

    def lineage(self, derived: bool) -> tuple[str | None, str | None]:
        """(base_model, base_model_relation) for a card of this model (``derived=False``: it is the model, so its own
        declaration) or of a model fine-tuned from it (``derived=True``: this model, by its Hub id, else the model
        its card names as its own base; the relation is ``finetune``)."""
        if not derived:
            return self.base_model, self.base_model_relation if self.base_model else None
        base = self.hub_id or self.base_model
        return base, "finetune" if base else None

    def card_fields(self, derived: bool) -> dict[str, str | None]:
        """The model card fields this model hands on (``CardOptions``' names): its license, and its lineage."""
        base, relation = self.lineage(derived)
        return {
            "license": self.license,
            "license_name": self.license_name,
            "license_link": self.license_link,
            "base_model": base,
            "base_model_relation": relation,
        }


def _text(value: Any) -> str | None:
    """A declared value when it is one plausible token (a license id, a Hub id, a tag), else None: a card is data."""
    return value if isinstance(value, str) and _TOKEN.fullmatch(value) else None


def _license(value: Any) -> str | None:
    text = value.lower() if isinstance(value, str) else None
    return text if text and LICENSE_ID.fullmatch(text) else None


def _link(value: Any) -> str | None:
    return value if isinstance(value, str) and _LINK.fullmatch(value) else None


def _texts(value: Any) -> list[str]:
    values = value if isinstance(value, list) else [value]
    return [text for text in (_text(v) for v in values) if text]


def tag_datasets(tag: str | None) -> list[str]:
    """The training sets a timm pretrained tag names: ``augreg2_in21k_ft_in1k`` → imagenet-21k, imagenet-1k.

    Args:
        tag: timm's pretrained tag (the part after the dot); None: none.
    """
    found = []
    for token in re.split(r"[_.-]", (tag or "").lower()):
        if token in TAG_DATASETS:
            found.append(TAG_DATASETS[token])
        elif token.startswith(TAG_DATASET_PREFIXES):
            found.append(token)
    return found


def _read_card(path: Path | None, problems: list[str]) -> dict[str, Any]:
    if path is None or not path.is_file():
        return {}
    from huggingface_hub.repocard import metadata_load

    try:
        return metadata_load(path) or {}
    except Exception as exc:  # noqa: BLE001 - any unreadable card (YAML, encoding, a list for a dict) declares nothing
        problems.append(f"cannot read the model card {path.name} ({type(exc).__name__})")
        return {}


def _read_config(path: Path | None, problems: list[str]) -> dict[str, Any]:
    if path is None or not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        problems.append(f"cannot read {path.name} ({type(exc).__name__})")
        return {}
    return config if isinstance(config, dict) else {}


def _from_files(
    spec: str, card_path: Path | None, config_path: Path | None, hub_id: str | None, problems: list[str]
) -> Provenance:
    card, config = _read_card(card_path, problems), _read_config(config_path, problems)
    pretrained = config.get("pretrained_cfg") if isinstance(config.get("pretrained_cfg"), dict) else {}
    license_id, where = _license(card.get("license")), "README.md"
    if license_id is None:
        license_id, where = _license(config.get("license")) or _license(pretrained.get("license")), "config.json"
    hub_id = hub_id or _text(pretrained.get("hf_hub_id"))
    tag = _text(pretrained.get("tag")) or (hub_id.partition(".")[2] if hub_id else None)
    trained_on = _texts(card.get("datasets")) + tag_datasets(tag)
    base = _texts(card.get("base_model"))
    return Provenance(
        spec=spec,
        hub_id=hub_id,
        license=license_id,
        license_name=_text(card.get("license_name")),
        license_link=_link(card.get("license_link")),
        license_from=where if license_id else None,
        base_model=base[0] if base else None,
        base_model_relation=_text(card.get("base_model_relation")),
        trained_on=tuple(dict.fromkeys(trained_on)),
        problems=tuple(problems),
    )


def _from_hub(spec: str, repo: str) -> Provenance:
    from huggingface_hub import try_to_load_from_cache

    repo_id, _, revision = repo.partition("@")
    if repo_id.count("/") != 1 or not _text(repo_id):
        return Provenance(spec=spec, problems=(f"{spec} is not hf-hub:ORG/NAME",))
    cache_dir = os.environ.get("HF_HUB_CACHE") or None  # read now, as models.sources does

    def cached(filename: str) -> Path | None:
        try:
            found = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir, revision=revision or None)
        except Exception:  # noqa: BLE001 - a malformed id or cache reads as "not cached"
            return None
        return Path(found) if isinstance(found, str) else None

    card, config = cached("README.md"), cached("config.json")
    problems = [] if card or config else [f"{spec} has neither README.md nor config.json in the huggingface cache"]
    return _from_files(spec, card, config, repo_id, problems)


def read_provenance(spec: str | os.PathLike | None) -> Provenance:
    """What the model at ``spec`` (as a report records ``model.path``) declares; nothing when it cannot be read.

    Args:
        spec: the model's path, ``local-dir:`` or ``hf-hub:`` spec; None: none recorded.
    """
    if spec is None or not str(spec):
        return Provenance(problems=("the report records no model path",))
    text = str(spec)
    if text.startswith(("hf-hub:", "hf_hub:")):
        return _from_hub(text, text.split(":", 1)[1])
    path = Path(text.split(":", 1)[1] if text.startswith("local-dir:") else text)
    folder = path.parent
    beside = any((folder / name).is_file() for name in ("config.json", "README.md"))
    if path.is_file() and path.name in WEIGHT_FILES and beside:
        path = folder  # a weights file inside a model folder (as models.sources reads it): the folder describes it
    if not path.is_dir():
        reason = "a checkpoint file outside a model folder" if path.is_file() else "not on this machine"
        return Provenance(spec=text, problems=(f"{text} is {reason}, so nothing it declares can be read",))
    return _from_files(text, path / "README.md", path / "config.json", None, [])
