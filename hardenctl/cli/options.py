"""Option parsing shared by the commands: every bad value is a one-line UserError, found before torch is imported."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import UserError, missing_file


def api_module():
    """The API module, imported on first use (it imports torch and timm)."""
    from .. import api

    return api


def require_model(spec: str) -> None:
    """A mistyped path is a one-line error before torch is imported (``hf-hub:`` specs are checked when loaded)."""
    text = str(spec)
    if text.startswith(("hf-hub:", "hf_hub:")):
        return
    path = Path(text.split(":", 1)[1] if text.startswith("local-dir:") else text)
    if not path.exists():
        raise missing_file(path, "model folder" if text.startswith("local-dir:") else "checkpoint")


def word(text: Optional[str]) -> Optional[str]:
    """A word option (``--norm``, ``--suite``, ``--eval-precision``, ``--gate-on``, ``--device``, ``--amp``, ...) as
    hardenctl compares it: case-insensitive, one rule everywhere (``BF16`` is ``bf16`` as ``AUTO`` is ``auto``)."""
    return text.strip().lower() if text is not None else None


# ---------------------------------------------------------------------------------------------
def parse_number(text: str, option: str) -> float:
    """A float or a fraction such as ``8/255``."""
    try:
        if "/" in text:
            num, den = text.split("/", 1)
            value = float(num) / float(den)
        else:
            value = float(text)
    except (ValueError, ZeroDivisionError):
        raise UserError(f"{option}: {text!r} is not a number", f"pass e.g. {option} 8/255 or {option} 0.031") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise UserError(f"{option}: {text!r} is not a finite number", f"pass e.g. {option} 8/255")
    return value


def parse_eps(text: str, norm: str, option: str = "--eps") -> float:
    value = parse_number(text, option)
    if value < 0:
        raise UserError(f"{option} must be >= 0, got {text}", f"pass e.g. {option} 8/255")
    if norm == "linf" and value > 1:
        raise UserError(
            f"{option} {text} exceeds 1, the whole [0,1] pixel range", "give eps in [0,1] pixel units, e.g. 8/255"
        )
    return value


def parse_list(text: Optional[str], option: str, count: int | None = None) -> list[float] | None:
    if text is None:
        return None
    values = [parse_number(part.strip(), option) for part in text.split(",") if part.strip()]
    if not values or (count is not None and len(values) != count):
        raise UserError(
            f"{option}: expected {count or 'one or more'} comma-separated numbers, got {text!r}",
            f"pass e.g. {option} 0.5,0.5,0.5",
        )
    return values


def parse_size(text: Optional[str]) -> tuple[int, int] | None:
    if text is None:
        return None
    parts = text.replace("x", ",").split(",")
    try:
        size = tuple(int(p) for p in parts)
    except ValueError:
        size = ()
    if len(size) == 1:
        size = (size[0], size[0])
    if len(size) != 2 or min(size) < 1:
        raise UserError(f"--input-size: {text!r} is not H,W", "pass e.g. --input-size 32,32")
    return size  # type: ignore[return-value]


Checkpoint = Annotated[
    str,
    typer.Argument(
        help=(
            "Model: .safetensors, timm train.py .pth/.pth.tar, a state_dict .pt, a timm model folder (config.json + "
            "weights; also local-dir:PATH) or hf-hub:ORG/NAME"
        )
    ),
]
# Model-loading options shared by every command that reads a checkpoint.
ArchOption = Annotated[Optional[str], typer.Option(help="timm architecture, when the checkpoint does not say")]
NumClassesOption = Annotated[Optional[int], typer.Option(help="Number of classes, when the checkpoint does not say")]
MeanOption = Annotated[Optional[str], typer.Option(help="Normalisation mean r,g,b (when the checkpoint has none)")]
StdOption = Annotated[Optional[str], typer.Option(help="Normalisation std r,g,b")]
InputSizeOption = Annotated[
    Optional[str],
    typer.Option(help="Input size H,W: overrides the model's data config (passed to timm as img_size where needed)"),
]
ResizeOption = Annotated[
    bool, typer.Option(help="Stretch every image to the input size (same as --crop-mode squash --crop-pct 1)")
]
CropPctOption = Annotated[
    Optional[str],
    typer.Option(help="Eval resize: short side to size/crop_pct, then centre crop, as timm does (0 < p <= 1)"),
]
InterpolationOption = Annotated[
    Optional[str], typer.Option(help="Resize interpolation: bilinear, bicubic, nearest, lanczos, box, hamming")
]
CropModeOption = Annotated[Optional[str], typer.Option(help="timm crop mode: center, squash or border")]
WorkersOption = Annotated[
    Optional[int],
    typer.Option(
        help="DataLoader worker processes for image folders (default: cores available, at most 8; 0: in-process)"
    ),
]
SkipUnreadableOption = Annotated[
    bool, typer.Option(help="Skip corrupt or unreadable images (counted in the report) instead of stopping")
]

RobustBenchDatasetOption = Annotated[
    Optional[str],
    typer.Option(
        help=(
            "The entry's RobustBench dataset: cifar10, cifar100 or imagenet (default: recognised from the data's "
            "name, else left empty)"
        )
    ),
]
AdditionalDataOption = Annotated[
    Optional[bool],
    typer.Option(
        "--additional-data/--no-additional-data",
        help=(
            "The entry's additional_data: whether the model was (pre-)trained on data besides the evaluated set "
            "(default: true when the model declares such data)"
        ),
    ),
]


def model_options(arch, num_classes, mean, std, input_size, resize, crop_pct, interpolation, crop_mode, device="auto"):
    """The :class:`~hardenctl.options.ModelOptions` the model-loading flags ask for, parsed (the object checks its
    values); ``--resize`` is ``--crop-mode squash --crop-pct 1``."""
    from .. import ModelOptions

    if resize and (crop_pct is not None or crop_mode is not None):
        raise UserError(
            "--resize is --crop-mode squash --crop-pct 1; it cannot be combined with either", "give one of them"
        )
    return ModelOptions(
        arch=arch,
        num_classes=num_classes,
        mean=parse_list(mean, "--mean"),
        std=parse_list(std, "--std"),
        input_size=parse_size(input_size),
        crop_pct=1.0 if resize else parse_number(crop_pct, "--crop-pct") if crop_pct is not None else None,
        interpolation=interpolation,
        crop_mode="squash" if resize else crop_mode,
        device=device,
    )


def check_outputs(
    files: dict[str, Optional[Path]], folders: dict[str, Optional[Path]] | None = None, pictures: bool = True
) -> None:
    """Every output a command would write (``pictures``: also the images beside ``--markdown``), checked before any
    model is loaded or report read: a path that cannot be written is a one-line error (exit 2) now, not a crash after
    the work (issue 28)."""
    from ..api import check_output_dir, check_output_file
    from ..report import in_github_actions

    given = {option: Path(path) for option, path in files.items() if path is not None}
    for option, path in given.items():
        check_output_file(path, option)
    markdown = given.get("--markdown")
    if markdown is not None and pictures:  # the pictures and the curve land beside it
        for suffix in (".pictures.png", ".eps_sweep.png"):
            given[f"--markdown's {suffix[1:]}"] = markdown.with_suffix(suffix)
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if in_github_actions() and summary:
        given["$GITHUB_STEP_SUMMARY"] = Path(summary)
    seen: dict[Path, str] = {}
    for option, path in given.items():
        check_output_file(path, option)
        resolved = path.resolve()
        if resolved in seen and option != "$GITHUB_STEP_SUMMARY":
            raise UserError(f"{seen[resolved]} and {option} are the same file {path}", "give each output its own path")
        seen.setdefault(resolved, option)
    for option, path in (folders or {}).items():
        if path is not None:
            check_output_dir(path, option)


def robustbench_options(path: Optional[Path], dataset: Optional[str], additional: Optional[bool]) -> dict:
    """The RobustBench entry's settings, checked before any work (the flags need --robustbench-json)."""
    if path is None:
        if dataset is not None or additional is not None:
            raise UserError(
                "--robustbench-dataset and --additional-data describe the --robustbench-json entry",
                "pass --robustbench-json FILE too, or drop them",
            )
        return {}
    from ..report import check_dataset_key

    return {"dataset": check_dataset_key(dataset) if dataset is not None else None, "additional": additional}


def parse_attack_list(text: str | None) -> list[str] | None:
    """``--attacks fgsm,pgd``: the names in order; a list naming nothing is an error, not the whole standard suite."""
    if text is None:
        return None
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    if not names:
        raise UserError(
            f"--attacks {text!r} names no attack", "pass e.g. --attacks apgd-ce,square, or leave it out for --suite"
        )
    return names


def parse_batch_size(text: str) -> int | str:
    """``--batch-size``: a positive whole number, or ``auto``."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = int(text)
    except ValueError:
        raise UserError(
            f"--batch-size must be a whole number or auto, got {text!r}",
            "pass e.g. --batch-size 128 or --batch-size auto",
        ) from None
    if value < 1:
        raise UserError(f"--batch-size must be at least 1, got {value}", "pass a positive --batch-size, or auto")
    return value


def parse_names(text: Optional[str]) -> tuple[str, ...] | None:
    """``--protected 3,5`` / ``cat,dog``: the names or ids as given (an empty list is the request's error to name)."""
    return tuple(part.strip() for part in text.split(",") if part.strip()) if text is not None else None
