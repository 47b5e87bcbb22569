"""Building, loading and saving models: timm architecture + weights + metadata → :class:`ImageClassifier`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import timm
import torch
from torch import Tensor, nn

from ..errors import UserError
from ..files import sha256_file
from ..options import ModelOptions
from .checkpoint import read_raw
from .classifier import ImageClassifier, ModelInfo
from .data_config import DataConfig, build_data_config
from .declared import parse_metadata, parse_pretrained_cfg, parse_train_args
from .metadata import is_declared, parse_label_names, shown
from .sources import resolve_source
from .surgery import check_surgery


def timm_cfg(arch: str):
    """timm's pretrained config for ``arch`` (classifier/first-conv names, mean, std).

    Args:
        arch: a timm architecture name.
    """
    if not timm.is_model(arch):
        close = timm.list_models(f"*{arch}*")[:5]
        hint = f"did you mean {', '.join(close)}?" if close else "see timm.list_models()"
        raise UserError(f"unknown timm architecture {shown(arch, 120)}", hint)
    return timm.models.get_pretrained_cfg(arch)


def _param_shape(state: dict[str, Tensor], module_name: str | None) -> torch.Size | None:
    if not module_name:
        return None
    tensor = state.get(f"{module_name}.weight")
    return tensor.shape if tensor is not None else None


def create_timm_model(
    arch: str,
    num_classes: int,
    in_chans: int = 3,
    input_size: tuple[int, int] | None = None,
    model_args: Mapping[str, Any] | None = None,
) -> nn.Module:
    """``timm.create_model`` without pretrained weights; ``img_size`` only for models that take it.

    Args:
        arch: a timm architecture name.
        num_classes: classes of the head.
        in_chans: input channels.
        input_size: (H, W) passed as ``img_size`` to models that take one (ViTs); None: the architecture's own.
        model_args: a model folder's, as timm's ``local-dir:`` loading passes them: they build the network timm
            builds from that folder (a ViT saved at ``img_size`` 32 is rebuilt at 32 even where its
            ``pretrained_cfg`` names another input size).
    """
    kwargs: dict[str, Any] = {
        k: v for k, v in (model_args or {}).items() if k not in ("num_classes", "in_chans", "pretrained")
    }
    kwargs.update(pretrained=False, num_classes=num_classes, in_chans=in_chans)
    if input_size is not None and "img_size" not in kwargs:
        try:
            return timm.create_model(arch, img_size=tuple(input_size), **kwargs)
        except TypeError:
            pass  # convolutional nets have no img_size argument and need none
    try:
        return timm.create_model(arch, **kwargs)
    except TypeError as exc:
        raise UserError(
            f"timm cannot build {arch!r} with the folder's model_args {sorted(model_args or {})} ({exc})"[:300],
            "fix model_args in config.json",
        ) from None


def _resolve(name: str, cli_value: Any, file_value: Any) -> Any:
    if cli_value is not None and file_value is not None and cli_value != file_value:
        raise UserError(
            f"the checkpoint says {name}={file_value} but the command line says {cli_value}",
            f"drop --{name.replace('_', '-')}",
        )
    return file_value if file_value is not None else cli_value


def _fit_channels(values: Sequence[float], in_chans: int, what: str, source: str = "cli") -> tuple[float, ...]:
    values = tuple(float(v) for v in values)
    if len(values) == in_chans:
        return values
    if len(values) == 1:
        return values * in_chans
    if in_chans == 1:
        return (sum(values) / len(values),)
    if source == "checkpoint":
        raise UserError(
            f"checkpoint metadata {what!r} has {len(values)} values but the model has {in_chans} input channels",
            f"re-export the file with {in_chans} {what} values (or one for all channels)",
        )
    raise UserError(
        f"{what} has {len(values)} values but the model has {in_chans} input channels",
        f"pass --{what} with {in_chans} values",
    )


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def _label_names(meta: Mapping[str, Any], source: Any, num_classes: int) -> list[str] | None:
    """The class names the file declares (header metadata first, else a model folder's ``config.json``), checked
    like every key hardenctl reads: names, one per output of the classifier."""
    folder_names = source.pretrained_cfg.get("label_names")  # as timm reads config.json: folded into pretrained_cfg
    if "label_names" in meta:
        names, key = meta["label_names"], "checkpoint metadata 'label_names'"
    elif is_declared(folder_names) and folder_names != []:
        names, key = parse_label_names("config.json label_names", folder_names), "config.json's label_names"
    else:
        return None
    if len(names) != num_classes:
        raise UserError(
            f"{key} of {source.spec} names {len(names)} classes but the classifier has {num_classes} outputs",
            "give one name per class, in class-id order",
        )
    return names


def load_model(
    path: str | Path, options: ModelOptions | None = None, device: str | torch.device = "cpu"
) -> ImageClassifier:
    """Load a model into an :class:`ImageClassifier` in eval mode, with its data config resolved.

    Args:
        path: hardenctl/timm ``.safetensors`` (metadata in the header), a timm ``train.py`` checkpoint, a bare
            state_dict, a timm model folder (``config.json`` + weights; also ``local-dir:PATH``) or ``hf-hub:ORG/NAME``.
        options: what the file may not say and data-config overrides (:class:`~hardenctl.options.ModelOptions`); the
            architecture and class count the file declares win (a contradicting option is an error), the data config
            follows :func:`hardenctl.models.data_config.build_data_config`, where an option overrides.
        device: where the model goes (resolved already: ``options.device`` is the caller's business).
    """
    options = options or ModelOptions()
    source = resolve_source(path)
    state, raw_meta = read_raw(source.weights)
    meta = parse_metadata(raw_meta)  # only checked values from here on; a bad one was a one-line UserError
    stored_args = raw_meta.get("train_args")  # a dict only from a timm train.py checkpoint; a header string is unknown
    trained = parse_train_args(stored_args) if isinstance(stored_args, Mapping) else {}
    arch = _resolve("arch", options.arch, _first(meta.get("arch"), source.architecture))
    if not arch:
        raise UserError(
            f"checkpoint {source.spec} does not name its architecture",
            "pass --arch NAME (a timm model name, e.g. resnet18)",
        )
    cfg = timm_cfg(arch)
    num_classes = _class_count(state, cfg, meta, source, trained, options.num_classes)
    in_chans = _channels(state, cfg, meta, trained)
    sources = [
        ("checkpoint", meta),
        ("train.py args", trained),
        ("config.json", parse_pretrained_cfg(source.declared_cfg())),
    ]
    data_config = _data_config(options, sources, cfg, arch, in_chans)
    net = create_timm_model(arch, num_classes, in_chans, data_config.input_size, source.model_args)
    recorded = meta.get("hardenctl", {})  # what hardenctl wrote: recipe, surgery ({} when absent)
    state, purifier_state = _restore_surgery(net, state, recorded, num_classes)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()][:1]
        raise UserError(
            f"weights in {source.spec} do not fit timm {arch!r} with {num_classes} classes "
            f"({first[0][:200] if first else 'key mismatch'})",
            "check --arch and --num-classes (and --input-size for models whose weights depend on it)",
        ) from None
    info = ModelInfo(
        arch=arch,
        num_classes=num_classes,
        in_chans=in_chans,
        mean=data_config.mean,
        std=data_config.std,
        normalization_source=data_config.sources.get("mean", "unknown"),
        input_size=data_config.input_size,
        input_size_source=data_config.sources.get("input_size"),
        randomized=meta.get("randomized", False),
        path=str(source.spec),
        sha256=sha256_file(source.weights),
        metadata=recorded,
        data_config=data_config,
        label_names=_label_names(meta, source, num_classes),
    )
    model = ImageClassifier(net, data_config.mean, data_config.std, info)
    if recorded.get("atop") is not None:
        from .purifier import restore_composite

        model = restore_composite(model, recorded["atop"], purifier_state)
    return model.to(device).eval()


def _class_count(
    state: Mapping[str, Tensor],
    cfg: Any,
    meta: Mapping[str, Any],
    source: Any,
    trained: Mapping[str, Any],
    asked: int | None,
) -> int:
    """The class count: what the classifier weights have, which metadata and ``--num-classes`` must agree with."""
    classifier_shape = _param_shape(state, cfg.classifier if isinstance(cfg.classifier, str) else None)
    weight_classes = int(classifier_shape[0]) if classifier_shape else None
    declared = _first(meta.get("num_classes"), source.num_classes, trained.get("num_classes"))
    if declared is not None and weight_classes is not None and declared != weight_classes:
        raise UserError(
            f"checkpoint metadata 'num_classes' is {declared} but the classifier weights have {weight_classes} outputs",
            f"re-export the file with num_classes={weight_classes}",
        )
    stored = declared or weight_classes
    if asked is not None and stored is not None and int(asked) != int(stored):
        raise UserError(
            f"--num-classes is {asked} but the checkpoint's classifier has {stored} outputs",
            f"pass --num-classes {stored}",
        )
    count = stored if stored is not None else asked
    if count is None:
        raise UserError(f"cannot tell how many classes checkpoint {source.spec} has", "pass --num-classes N")
    return int(count)


def _channels(state: Mapping[str, Tensor], cfg: Any, meta: Mapping[str, Any], trained: Mapping[str, Any]) -> int:
    """Input channels: what the first convolution takes, which metadata must agree with (3 when nothing says)."""
    first_conv = cfg.first_conv if isinstance(cfg.first_conv, str) else None
    conv_shape = _param_shape(state, first_conv)
    weight_chans = int(conv_shape[1]) if conv_shape is not None and len(conv_shape) == 4 else None
    if meta.get("in_chans") is not None and weight_chans is not None and meta["in_chans"] != weight_chans:
        raise UserError(
            f"checkpoint metadata 'in_chans' is {meta['in_chans']} but the first convolution takes "
            f"{weight_chans} channels",
            f"re-export the file with in_chans={weight_chans}",
        )
    return int(meta.get("in_chans") or weight_chans or trained.get("in_chans") or 3)


def _data_config(options: ModelOptions, sources: list, cfg: Any, arch: str, in_chans: int) -> DataConfig:
    """The data config from what the file declares, with the options on top (:func:`build_data_config`)."""
    if (options.mean is None) != (options.std is None):
        raise UserError(
            "--mean and --std must be given together", "pass both, e.g. --mean 0.49,0.48,0.45 --std 0.25,0.24,0.26"
        )
    flags = {
        "input_size": options.input_size,
        "mean": options.mean,
        "std": options.std,
        "crop_pct": options.crop_pct,
        "interpolation": options.interpolation,
        "crop_mode": options.crop_mode,
    }
    data_config = build_data_config(sources, flags, cfg.to_dict(), arch)
    data_config.mean = _fit_channels(data_config.mean, in_chans, "mean", data_config.sources.get("mean", "cli"))
    data_config.std = _fit_channels(data_config.std, in_chans, "std", data_config.sources.get("std", "cli"))
    if any(s <= 0 for s in data_config.std):
        raise UserError(f"std must be positive, got {data_config.std}", "pass --std with positive values")
    return data_config


def _restore_surgery(
    net: nn.Module, state: dict[str, Tensor], recorded: Mapping[str, Any], num_classes: int
) -> tuple[dict[str, Tensor], Any]:
    """Modules hardenctl added, rebuilt before the weights load: FSR's, and an AToP purifier's tensors set apart."""
    check_surgery(recorded)  # sizes of the modules it rebuilds, before any is built
    purifier_state = None
    if recorded.get("atop") is not None:  # an AToP composite: the purifier's tensors are rebuilt separately
        from .purifier import split_tensors

        state, purifier_state = split_tensors(state)
    if recorded.get("fsr"):  # FSR modules must exist before their weights load
        from .fsr import restore_fsr

        restore_fsr(net, recorded["fsr"], num_classes)
    return state, purifier_state


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` → first CUDA device if present, else CPU; a CUDA request without CUDA is an error.

    Args:
        name: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    """
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
