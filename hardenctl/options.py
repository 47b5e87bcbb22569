"""The options of every command, as frozen objects built once by the caller (the CLI, or a notebook) and carried
unchanged through the API to the layer that reads them: how to read a model (:class:`ModelOptions`), how to read data
(:class:`DataOptions`), how an evaluation runs (:class:`EvalRun`; what it measures is
:class:`~hardenctl.evaluation.EvalConfig`), and everything a harden run is asked (:class:`HardenOptions`).

Why objects: the same ten model and data settings used to travel as separate parameters through six signatures,
each a chance to drop or misspell one. Each object checks its own values when made, with the CLI's messages, so a
mistyped option is refused before any model is loaded. No torch here: the CLI builds these before importing it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .errors import UserError

AMP_MODES = ("auto", "off", "bf16", "fp16")


def word(value: Any) -> Any:
    """A word option as hardenctl compares it: trimmed and lower-case (``BF16`` is ``bf16``); anything else as is."""
    return value.strip().lower() if isinstance(value, str) else value


def at_least_one(value: int | None, option: str) -> None:
    if value is not None and value < 1:
        raise UserError(f"{option} must be at least 1, got {value}", f"pass a positive {option}")


@dataclass(frozen=True)
class ModelOptions:
    """How to read a model: what its checkpoint may not say (``arch``, ``num_classes``), overrides of its data config
    (``mean``/``std``, ``input_size``, ``crop_pct``, ``interpolation``, ``crop_mode``) and the ``device``.

    Args:
        arch: timm architecture, for a checkpoint that does not name one.
        num_classes: class count, for a checkpoint that does not say.
        mean: normalisation mean per channel (folded into the model).
        std: normalisation std per channel.
        input_size: (height, width) of the model's input.
        crop_pct: the eval resize's crop fraction, in [0.05, 1].
        interpolation: timm interpolation name (bilinear, bicubic, ...).
        crop_mode: timm crop mode (center, squash, border).
        device: auto, cpu, cuda or cuda:N.
    """

    arch: str | None = None
    num_classes: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    input_size: tuple[int, int] | None = None
    crop_pct: float | None = None
    interpolation: str | None = None
    crop_mode: str | None = None
    device: str = "auto"

    def __post_init__(self) -> None:
        from .models.data_config import check_crop_mode, check_crop_pct, check_interpolation

        object.__setattr__(self, "device", word(self.device))
        at_least_one(self.num_classes, "--num-classes")
        if self.crop_pct is not None:
            check_crop_pct(self.crop_pct)
        if self.interpolation is not None:
            object.__setattr__(self, "interpolation", check_interpolation(word(self.interpolation)))
        if self.crop_mode is not None:
            object.__setattr__(self, "crop_mode", check_crop_mode(word(self.crop_mode)))
        for name in ("mean", "std", "input_size"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(value))


@dataclass(frozen=True)
class DataOptions:
    """How to read data.

    Args:
        workers: DataLoader worker processes for image folders and tars (None: the cores available, at most 8, shared
            among the local ranks under torchrun; 0: in-process).
        skip_unreadable: skip corrupt images (counted in the report) instead of stopping.
    """

    workers: int | None = None
    skip_unreadable: bool = False

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 0:
            raise UserError(
                f"--workers must be >= 0, got {self.workers}", "pass e.g. --workers 4 (0: read in the main process)"
            )


@dataclass(frozen=True)
class EvalRun:
    """How an evaluation runs, not what it measures (that is :class:`~hardenctl.evaluation.EvalConfig`).

    Args:
        resume_dir: keep the evaluation's state here after every batch.
        resume: continue the killed evaluation whose state is in ``resume_dir``.
        save_adversarial: keep every sample's worst-case point in this folder.
        pictures: how many examples the Markdown/HTML report draws.
        shard: under torchrun, split the batches over the processes.
    """

    resume_dir: Path | None = None
    resume: bool = False
    save_adversarial: Path | None = None
    pictures: int = 8
    shard: bool = True

    def __post_init__(self) -> None:
        if self.resume and self.resume_dir is None:
            raise UserError(
                "--resume needs --resume-dir (where the killed evaluation kept its state)",
                "pass --resume-dir DIR, the directory of the killed run",
            )
        if self.pictures < 0:
            raise UserError(f"--pictures must be >= 0, got {self.pictures}", "pass e.g. --pictures 8, or 0 for none")


@dataclass(frozen=True)
class HardenOptions:
    """Everything a harden run is asked, carried from the caller to the training engine.

    Args:
        out_dir: the output folder (a timm model folder, with the reports and checkpoints).
        recipe: a recipe name (``hardenctl recipes``) or a recipe YAML path.
        overrides: recipe parameters, ``{"beta": 5}`` or ``("beta=5", ...)`` as ``--set`` takes them.
        epochs: the recipe's ``epochs``.
        batch_size: the recipe's global ``batch_size``.
        lr: the recipe's peak ``lr``: a number, or ``auto`` (measured on the held-out split).
        profile: the recipe file's profile (finetune or paper).
        reinit: start from random weights, as the papers do.
        seed: the run's seed (a run repeats exactly on CPU).
        device: auto, cpu, cuda or cuda:N (one GPU per process under torchrun).
        amp: mixed precision on CUDA: auto, off, bf16, fp16.
        channels_last: train in channels_last memory format.
        resume: continue a killed run in ``out_dir``.
        overwrite: write into a non-empty ``out_dir`` (replacing an earlier run there).
        eval_data: data for the before/after report (None: the held-out split of the training data).
        eval_n: images of the before/after report.
        eval_options: its EvalConfig fields (suite, eps, ...).
        input_report: an earlier report of the input model, reused when made with exactly these settings.
        reading: how to read the training and evaluation data.
    """

    out_dir: Path
    recipe: str | Path = "mart"
    overrides: Mapping[str, Any] | tuple[str, ...] = ()
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | str | None = None
    profile: str | None = None
    reinit: bool = False
    seed: int = 0
    device: str = "auto"
    amp: str = "auto"
    channels_last: bool = False
    resume: bool = False
    overwrite: bool = False
    eval_data: Any = None
    eval_n: int | None = 1000
    eval_options: Mapping[str, Any] = field(default_factory=dict)
    input_report: Any = None
    reading: DataOptions = field(default_factory=DataOptions)

    def __post_init__(self) -> None:
        object.__setattr__(self, "out_dir", Path(self.out_dir))
        for name in ("device", "amp", "profile"):
            object.__setattr__(self, name, word(getattr(self, name)))
        for value, option in ((self.epochs, "--epochs"), (self.batch_size, "--batch-size"), (self.eval_n, "--eval-n")):
            at_least_one(value, option)
        if self.amp not in AMP_MODES:
            raise UserError(
                f"--amp must be one of {', '.join(AMP_MODES)}, got {self.amp!r}",
                "pass --amp bf16, --amp fp16 or --amp off",
            )
        if self.resume and self.overwrite:
            raise UserError("--resume continues the run in --out and --overwrite replaces it", "give one of them")
        if isinstance(self.recipe, str) and "/" not in self.recipe and not self.recipe.endswith((".yaml", ".yml")):
            object.__setattr__(self, "recipe", word(self.recipe))  # a built-in name, in any case; a path as spelled
        if isinstance(self.lr, str) and word(self.lr) == "auto":
            object.__setattr__(self, "lr", "auto")


__all__ = ["AMP_MODES", "DataOptions", "EvalRun", "HardenOptions", "ModelOptions", "at_least_one", "word"]
