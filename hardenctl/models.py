"""Checkpoint I/O and the normalised classifier every attack sees.

Why this module exists: a robust-accuracy number is only meaningful if the attack
works in pixel space ([0, 1]) on exactly the network that ships. So loading folds
the normalisation into the model (:class:`ImageClassifier`), records where every
setting came from, and never unpickles code (``torch.load(weights_only=True)``).
"""
from __future__ import annotations

import argparse
import json
import pickle
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import timm
import torch
from torch import Tensor, nn

from . import __version__
from .errors import UserError, missing_file
from .files import atomic_path, sha256_file

TORCH_SUFFIXES = (".pt", ".pth", ".tar", ".bin", ".ckpt")


@dataclass
class ModelInfo:
    """What we know about a loaded model, and where each setting came from."""

    arch: str
    num_classes: int
    in_chans: int = 3
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
    normalization_source: str = "unknown"
    input_size: tuple[int, int] | None = None  # (H, W) the model was declared for
    input_size_source: str | None = None
    randomized: bool = False
    path: str | None = None
    sha256: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)  # extra hardenctl metadata (recipe, ...)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ImageClassifier(nn.Module):
    """[0, 1] pixels in, logits out: ``model((x - mean) / std)``.

    Folding normalisation in means every attack, ε and check works on pixels, the
    space in which a threat model is defined.
    """

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float], info: ModelInfo | None = None):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.info = info

    def forward(self, x: Tensor) -> Tensor:
        return self.model((x - self.mean.to(x.dtype)) / self.std.to(x.dtype))


# ---------------------------------------------------------------------------------------------
# reading checkpoints
# ---------------------------------------------------------------------------------------------
def _read_safetensors(path: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            raw_meta = fh.metadata() or {}
            state = {key: fh.get_tensor(key) for key in fh.keys()}
    except Exception as exc:  # safetensors raises several types for bad headers / short files
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"cannot read safetensors file {path} ({reason})", "the file is corrupt or truncated: re-export it") from None
    meta: dict[str, Any] = {}
    for key, value in raw_meta.items():
        try:
            meta[key] = json.loads(value)
        except (json.JSONDecodeError, TypeError):
            meta[key] = value
    return state, meta


def _read_torch(path: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    try:
        # timm's train.py stores its argparse.Namespace in the checkpoint; a Namespace is a
        # plain attribute bag (no code runs on load), so it is the one class we allow.
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = str(exc).split("\n")[0][:160]
        raise UserError(
            f"checkpoint {path} contains pickled Python objects that hardenctl will not unpickle ({detail})",
            "re-save only the weights: torch.save(model.state_dict(), path), or export to .safetensors",
        ) from None
    except Exception as exc:
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise UserError(f"cannot read checkpoint {path} ({reason})", "the file is corrupt or not a PyTorch checkpoint") from None
    meta: dict[str, Any] = {}
    if isinstance(obj, dict) and ("state_dict" in obj or "state_dict_ema" in obj):
        state = obj.get("state_dict") or obj.get("state_dict_ema")
        if isinstance(obj.get("arch"), str):
            meta["arch"] = obj["arch"]
    elif isinstance(obj, dict) and obj and all(isinstance(v, Tensor) for v in obj.values()):
        state = obj
    else:
        raise UserError(
            f"checkpoint {path} is not a state_dict nor a timm train.py checkpoint",
            "save model.state_dict() or a dict with a 'state_dict' key",
        )
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise UserError(f"checkpoint {path} has a malformed state_dict", "save model.state_dict() again")
    return state, meta


def read_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Weights and metadata of a checkpoint, prefixes from DDP/compile wrappers removed."""
    path = Path(path)
    if not path.is_file():
        raise missing_file(path, "checkpoint")
    state, meta = _read_safetensors(path) if path.suffix == ".safetensors" else _read_torch(path)
    for prefix in ("module.", "_orig_mod."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state, meta


# ---------------------------------------------------------------------------------------------
# building models
# ---------------------------------------------------------------------------------------------
def timm_cfg(arch: str):
    """timm's pretrained config for ``arch`` (classifier/first-conv names, mean, std)."""
    if not timm.is_model(arch):
        close = timm.list_models(f"*{arch}*")[:5]
        hint = f"did you mean {', '.join(close)}?" if close else "see timm.list_models()"
        raise UserError(f"unknown timm architecture {arch!r}", hint)
    return timm.models.get_pretrained_cfg(arch)


def _param_shape(state: dict[str, Tensor], module_name: str | None) -> torch.Size | None:
    if not module_name:
        return None
    tensor = state.get(f"{module_name}.weight")
    return tensor.shape if tensor is not None else None


def create_timm_model(arch: str, num_classes: int, in_chans: int = 3, input_size: tuple[int, int] | None = None) -> nn.Module:
    """``timm.create_model`` without pretrained weights; ``img_size`` only for models that take it."""
    kwargs: dict[str, Any] = {"pretrained": False, "num_classes": num_classes, "in_chans": in_chans}
    if input_size is not None:
        try:
            return timm.create_model(arch, img_size=tuple(input_size), **kwargs)
        except TypeError:
            pass  # convolutional nets have no img_size argument and need none
    return timm.create_model(arch, **kwargs)


def _resolve(name: str, cli_value: Any, file_value: Any) -> Any:
    if cli_value is not None and file_value is not None and cli_value != file_value:
        raise UserError(f"the checkpoint says {name}={file_value} but the command line says {cli_value}", f"drop --{name.replace('_', '-')}")
    return file_value if file_value is not None else cli_value


def _fit_channels(values: Sequence[float], in_chans: int, what: str) -> tuple[float, ...]:
    values = tuple(float(v) for v in values)
    if len(values) == in_chans:
        return values
    if len(values) == 1:
        return values * in_chans
    if in_chans == 1:
        return (sum(values) / len(values),)
    raise UserError(f"{what} has {len(values)} values but the model has {in_chans} input channels", f"pass --{what} with {in_chans} values")


def load_model(
    path: str | Path,
    arch: str | None = None,
    num_classes: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    input_size: tuple[int, int] | None = None,
    in_chans: int | None = None,
    device: str | torch.device = "cpu",
) -> ImageClassifier:
    """Load a checkpoint into an :class:`ImageClassifier` in eval mode.

    Accepts hardenctl/timm ``.safetensors`` (metadata in the header), timm ``train.py``
    checkpoints and bare state_dicts. Settings the file declares win; the command-line
    values fill the gaps; a contradiction is an error rather than a silent choice.
    """
    path = Path(path)
    state, meta = read_checkpoint(path)
    arch = _resolve("arch", arch, meta.get("arch"))
    if not arch:
        raise UserError(f"checkpoint {path} does not name its architecture", "pass --arch NAME (a timm model name, e.g. resnet18)")
    cfg = timm_cfg(arch)

    classifier_shape = _param_shape(state, cfg.classifier if isinstance(cfg.classifier, str) else None)
    stored_classes = meta.get("num_classes") or (int(classifier_shape[0]) if classifier_shape else None)
    if num_classes is not None and stored_classes is not None and int(num_classes) != int(stored_classes):
        raise UserError(
            f"--num-classes is {num_classes} but the checkpoint's classifier has {stored_classes} outputs",
            f"pass --num-classes {stored_classes}",
        )
    num_classes = stored_classes if stored_classes is not None else num_classes
    if num_classes is None:
        raise UserError(f"cannot tell how many classes checkpoint {path} has", "pass --num-classes N")

    first_conv = cfg.first_conv if isinstance(cfg.first_conv, str) else None
    conv_shape = _param_shape(state, first_conv)
    in_chans = meta.get("in_chans") or (int(conv_shape[1]) if conv_shape is not None and len(conv_shape) == 4 else None) or in_chans or 3

    size_source = None
    declared = meta.get("input_size")
    if declared is not None:
        input_size, size_source = tuple(declared)[-2:], "checkpoint"
    elif input_size is not None:
        input_size, size_source = tuple(input_size), "cli"

    net = create_timm_model(arch, int(num_classes), int(in_chans), input_size)
    recorded = meta.get("hardenctl") if isinstance(meta.get("hardenctl"), dict) else {}  # what hardenctl wrote: recipe, surgery
    atop = recorded.get("atop")
    if atop is not None:  # an AToP composite: the purifier's tensors are rebuilt separately (hardenctl.purifier)
        from .purifier import split_tensors

        state, purifier_state = split_tensors(state)
    if recorded.get("fsr"):  # FSR modules must exist before their weights load
        from .fsr_module import restore_fsr

        restore_fsr(net, recorded["fsr"], int(num_classes))
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()][:1]
        raise UserError(
            f"weights in {path} do not fit timm {arch!r} with {num_classes} classes ({first[0][:200] if first else 'key mismatch'})",
            "check --arch and --num-classes",
        ) from None

    if meta.get("mean") is not None and meta.get("std") is not None:
        mean, std, source = meta["mean"], meta["std"], "checkpoint"
    elif mean is not None and std is not None:
        source = "cli"
    elif mean is not None or std is not None:
        raise UserError("--mean and --std must be given together", "pass both, e.g. --mean 0.49,0.48,0.45 --std 0.25,0.24,0.26")
    else:
        mean, std, source = cfg.mean, cfg.std, f"timm pretrained_cfg of {arch}"
    mean = _fit_channels(mean, int(in_chans), "mean")
    std = _fit_channels(std, int(in_chans), "std")
    if any(s <= 0 for s in std):
        raise UserError(f"std must be positive, got {std}", "pass --std with positive values")

    info = ModelInfo(
        arch=arch,
        num_classes=int(num_classes),
        in_chans=int(in_chans),
        mean=mean,
        std=std,
        normalization_source=source,
        input_size=tuple(int(v) for v in input_size) if input_size else None,
        input_size_source=size_source,
        randomized=bool(meta.get("randomized", False)),
        path=str(path),
        sha256=sha256_file(path),
        metadata=recorded,
    )
    model = ImageClassifier(net, mean, std, info)
    if atop is not None:
        from .purifier import restore_composite

        model = restore_composite(model, atop, purifier_state)
    return model.to(device).eval()


def wrap_model(
    net: nn.Module, arch: str, num_classes: int, mean: Sequence[float], std: Sequence[float],
    in_chans: int = 3, input_size: tuple[int, int] | None = None, source: str = "python",
) -> ImageClassifier:
    """Wrap an in-memory timm model (e.g. one just trained) like :func:`load_model` would."""
    info = ModelInfo(arch=arch, num_classes=num_classes, in_chans=in_chans, mean=tuple(mean), std=tuple(std),
                     normalization_source=source, input_size=input_size, input_size_source=source if input_size else None)
    return ImageClassifier(net, mean, std, info)


def save_model(model: ImageClassifier, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write weights + metadata to ``.safetensors`` atomically.

    Keys are the bare timm keys, so ``timm.create_model(arch, num_classes=N,
    checkpoint_path=path)`` loads the file as well as ``hardenctl eval`` does. A composite
    (AToP's purifier in front of the network) adds its own tensors under their own prefix.
    """
    from safetensors.torch import save_file

    info = model.info
    if info is None:
        raise ValueError("model has no ModelInfo; build it with load_model or wrap_model")
    tensors = dict(model.model.state_dict())
    extra_tensors = getattr(model, "extra_tensors", None)  # a composite's own modules (AToP's purifier), under their prefix
    if extra_tensors is not None:
        added = extra_tensors()
        if set(added) & set(tensors):
            raise ValueError(f"tensor names clash with the network's: {sorted(set(added) & set(tensors))[:3]}")
        tensors.update(added)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    meta: dict[str, Any] = {
        "format": "hardenctl",
        "hardenctl_version": __version__,
        "arch": info.arch,
        "num_classes": info.num_classes,
        "in_chans": info.in_chans,
        "mean": list(info.mean),
        "std": list(info.std),
        "randomized": info.randomized,
        "hardenctl": {**info.metadata, **(extra or {})},
    }
    if info.input_size:
        meta["input_size"] = list(info.input_size)
    header = {k: (v if isinstance(v, str) else json.dumps(v)) for k, v in meta.items()}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=header)
    return path


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` → first CUDA device if present, else CPU; a CUDA request without CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}", "use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device {name} requested but CUDA is not available", "use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"device {name} does not exist ({torch.cuda.device_count()} GPUs)", "pick a smaller index")
    return device
