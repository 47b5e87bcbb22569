"""Where a model comes from: a checkpoint file, a timm model folder, ``local-dir:PATH`` or ``hf-hub:ORG/NAME``.

timm keeps models as folders (``config.json`` + ``model.safetensors``, what ``save_for_hf`` writes and the
Hub serves). A spec resolves to one weights file plus that folder's ``config.json`` (architecture,
num_classes, label_names, pretrained_cfg, model_args), read by timm's own loader so that hardenctl and
timm see one model. ``hf-hub:`` goes through huggingface_hub's cache: it reads the cache first and never
waits on a network it does not have (offline, a missing model is a one-line error saying what to download).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError, missing_file

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_model.safetensors")


UNDECLARED = "hardenctl_undeclared"  # config.json: pretrained_cfg values written for timm's sake, never declared


@dataclass
class ModelSource:
    """A resolved model spec: the weights file and, for a model folder, its ``config.json`` as timm reads it
    (``pretrained_cfg`` with num_classes and label_names folded in, ``model_args`` for the constructor)."""

    spec: str
    weights: Path
    kind: str = "file"  # file | folder | hf-hub
    architecture: str | None = None
    pretrained_cfg: dict[str, Any] = field(default_factory=dict)
    model_args: dict[str, Any] = field(default_factory=dict)
    undeclared: dict[str, Any] = field(default_factory=dict)  # pretrained_cfg keys hardenctl wrote only for timm

    @property
    def num_classes(self) -> int | None:
        value = self.pretrained_cfg.get("num_classes")
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None

    @property
    def label_names(self) -> list[str] | None:
        names = self.pretrained_cfg.get("label_names")
        return [str(n) for n in names] if isinstance(names, list) and names else None

    def declared_cfg(self) -> dict[str, Any]:
        """``pretrained_cfg`` less the values hardenctl wrote for timm without their being declared (still equal
        to what was written: an edited value counts as declared)."""
        return {
            key: value
            for key, value in self.pretrained_cfg.items()
            if key not in self.undeclared or _plain(value) != _plain(self.undeclared[key])
        }


def _plain(value: Any) -> Any:
    """JSON's view of a value (tuples as lists), for comparing what timm parsed with what was written."""
    return json.loads(json.dumps(value))


def _check_config_json(path: Path) -> dict[str, Any]:
    """The file's JSON, checked enough for one-line errors before timm interprets it."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(
            f"cannot read {path} ({type(exc).__name__})", "fix or re-export the model folder's config.json"
        ) from None
    if not isinstance(config, dict):
        raise UserError(
            f"{path} is not a JSON object", "re-export the model folder (timm's save_for_hf writes a valid one)"
        )
    if not isinstance(config.get("architecture"), str) or not config["architecture"]:
        raise UserError(f"{path} names no architecture", 'add "architecture": "<timm model name>" to config.json')
    for key in ("pretrained_cfg", "model_args"):
        if key in config and not isinstance(config[key], dict):
            raise UserError(f"{path}: {key} is not an object", "re-export the model folder")
    return config


def read_config_json(path: Path, spec: str, weights: Path, kind: str) -> ModelSource:
    """A model folder's ``config.json`` read by timm's own loader (the one ``create_model('local-dir:…')`` uses),
    so hardenctl sees the folder as timm builds it; checked first, so a bad file is a one-line error.

    Args:
        path: the folder's ``config.json``.
        spec: what the user passed, as reports name the model.
        weights: the weights file beside it.
        kind: ``folder`` or ``hf-hub``.
    """
    raw = _check_config_json(path)
    try:
        from timm.models._hub import load_model_config_from_path  # timm re-exports only the hf-hub variant
    except ImportError:
        import timm

        raise UserError(
            f"timm {timm.__version__} cannot read timm model folders ({path.parent})",
            "upgrade timm (pip install -U timm)",
        ) from None
    try:
        pretrained_cfg, architecture, model_args = load_model_config_from_path(path.parent)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise UserError(
            f"timm cannot read {path} ({type(exc).__name__}: {exc})"[:300], "re-export the model folder"
        ) from None
    marker = raw.get(UNDECLARED)
    return ModelSource(
        spec,
        weights,
        kind,
        architecture,
        dict(pretrained_cfg),
        dict(model_args or {}),
        dict(marker) if isinstance(marker, dict) else {},
    )


def _from_folder(folder: Path, spec: str, kind: str) -> ModelSource:
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise UserError(
            f"{folder} is a folder without config.json",
            "pass a checkpoint file, or a timm model folder (config.json + model.safetensors)",
        )
    weights = next((folder / name for name in WEIGHT_FILES if (folder / name).is_file()), None)
    if weights is None:
        raise UserError(
            f"model folder {folder} has no weights ({' or '.join(WEIGHT_FILES[:2])})",
            "copy the weights file next to config.json",
        )
    return read_config_json(config_file, spec, weights, kind)


def _hf_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _from_hub(repo: str, spec: str) -> ModelSource:
    """Files from huggingface_hub's cache; the network only when not offline and the cache misses."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    repo_id, _, revision = repo.partition("@")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise UserError(f"hf-hub:{repo} is not ORG/NAME", "pass e.g. hf-hub:timm/resnet18.a1_in1k")

    cache_dir = os.environ.get("HF_HUB_CACHE") or None  # read now, not when huggingface_hub was imported

    def fetch(filename: str) -> Path:
        try:
            return Path(
                hf_hub_download(
                    repo_id, filename, revision=revision or None, cache_dir=cache_dir, local_files_only=True
                )
            )
        except (LocalEntryNotFoundError, EntryNotFoundError, FileNotFoundError):
            if _hf_offline():
                raise
        return Path(hf_hub_download(repo_id, filename, revision=revision or None, cache_dir=cache_dir, etag_timeout=10))

    try:
        config_path = fetch("config.json")
        _check_config_json(config_path)
        weights = None
        for name in WEIGHT_FILES[:2]:
            try:
                weights = fetch(name)
                break
            except Exception:
                continue
        if weights is None:
            raise LocalEntryNotFoundError(f"no weights for {repo_id}")
    except UserError:
        raise
    except Exception as exc:
        offline = "offline (HF_HUB_OFFLINE=1)" if _hf_offline() else "the download failed"
        raise UserError(
            f"hf-hub:{repo} is not in the huggingface cache and {offline} ({type(exc).__name__})",
            f"download it where there is network (`hf download {repo_id}`) and copy the cache "
            f"({os.environ.get('HF_HUB_CACHE') or os.environ.get('HF_HOME') or '~/.cache/huggingface'}), "
            "or pass a local model folder",
        ) from None
    return read_config_json(config_path, spec, weights, "hf-hub")


def resolve_source(spec: str | Path) -> ModelSource:
    """A checkpoint file, a timm model folder (as a path or ``local-dir:PATH``), or ``hf-hub:ORG/NAME[@rev]``.

    Args:
        spec: the model argument, as the user gave it.
    """
    text = str(spec)
    if text.startswith(("hf-hub:", "hf_hub:")):
        return _from_hub(text.split(":", 1)[1], text)
    if text.startswith("local-dir:"):
        folder = Path(text.split(":", 1)[1])
        if not folder.is_dir():
            raise missing_file(folder, "model folder")
        return _from_folder(folder, text, "folder")
    path = Path(text)
    if path.is_dir():
        return _from_folder(path, text, "folder")
    if not path.is_file():
        raise missing_file(path, "checkpoint")
    sibling = path.parent / "config.json"  # a weights file inside a timm model folder carries the folder's config
    if path.name in WEIGHT_FILES and sibling.is_file():
        return read_config_json(sibling, text, path, "folder")
    return ModelSource(text, path)
