"""The one training engine every recipe runs on: loop, training attack, AMP, DDP, checkpoints, resume, report.

Why one engine: what makes adversarial training *correct and repeatable* is the same for every
recipe — the attack runs with the model in ``eval()`` mode and the loss in ``train()`` mode,
every random draw is seeded, checkpoints are atomic so a killed run resumes to the same
weights, the best epoch is chosen on held-out data (robust overfitting), and the input and
hardened models are evaluated with the same attacks, seed and samples. A recipe
(:mod:`hardenctl.recipes`) only states its loss.

Determinism: every random draw of a step is seeded from (seed, epoch, step): augmentation and
the attack's start are drawn for the whole global batch and each process takes its share, so
they do not depend on the number of processes; the shuffling comes from (seed, epoch) through
``DistributedSampler``.
So a resumed run needs no saved RNG state and repeats an uninterrupted one exactly on CPU.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F
import yaml
from torch import Tensor, nn

from . import __version__
from .attacks import PGD, Attack
from .data import ImageDataset
from .errors import UserError
from .evaluate import EvalConfig, evaluate, run_suite
from .files import atomic_path, atomic_write, sha256_file
from .models import ImageClassifier, resolve_device, save_model
from .recipes import LossFn, Recipe, RecipeConfig

SCHEMA_VERSION = "harden-1.0"
AMP_MODES = ("auto", "off", "bf16", "fp16")
CHECKPOINT_DIR = "checkpoints"
TrainProgress = Callable[..., None]  # (stage, done, total, metrics: dict | None = None)
Log = Callable[[str], None]


# ---------------------------------------------------------------------------------------------
# run options and the process group
# ---------------------------------------------------------------------------------------------
@dataclass
class RunOptions:
    """How to run (not what to learn: that is the recipe's config)."""

    out_dir: Path
    seed: int = 0
    device: str = "auto"
    amp: str = "auto"  # auto: bf16 on CUDA, off on CPU
    channels_last: bool = False
    resume: bool = False
    eval_n: int | None = 1000
    eval_options: dict[str, Any] = field(default_factory=dict)  # EvalConfig fields: suite, eps, apgd_steps, ...
    input_report: Any = None  # an earlier Report of the input model, reused when it was made with the same settings


@dataclass
class Distributed:
    """Rank and world size under ``torchrun`` (one process without it)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> "Distributed":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        return cls(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))

    def start(self, device: torch.device) -> None:
        import torch.distributed as dist

        if self.world_size > 1 and not dist.is_initialized():
            if device.type == "cuda":
                torch.cuda.set_device(device)  # NCCL collectives use the current device
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
            self.owns_group = True

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over all processes."""
        if self.world_size == 1:
            return values
        import torch.distributed as dist

        tensor = torch.tensor(values, dtype=torch.float64)
        if dist.get_backend() == "nccl":
            tensor = tensor.cuda()
        dist.all_reduce(tensor)
        return tensor.cpu().tolist()

    def close(self) -> None:
        if self.owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()
            self.owns_group = False


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``--amp`` on ``device`` (None: full precision)."""
    if amp not in AMP_MODES:
        raise UserError(f"--amp must be one of {', '.join(AMP_MODES)}, got {amp!r}", "pass --amp bf16, --amp fp16 or --amp off")
    if amp == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    if amp != "off" and device.type != "cuda":
        # measured with torch 2.14: CPU bf16 autocast gives run-to-run different, sometimes NaN, conv weight gradients
        raise UserError(f"--amp {amp} needs a CUDA device (CPU autocast is not deterministic)", "use --amp off on CPU")
    return {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def amp_label(dtype: torch.dtype | None) -> str:
    return {None: "off", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def step_seed(*parts: int) -> int:
    """A 63-bit seed from integers (seed, epoch, step, ...), the same on every platform."""
    digest = hashlib.blake2b(repr(tuple(int(p) for p in parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


# ---------------------------------------------------------------------------------------------
# data: held-out split, augmentation
# ---------------------------------------------------------------------------------------------
def holdout_count(n: int, fraction: float) -> int:
    """Images held out of ``n`` at ``fraction`` (rounded; 0 for fraction 0)."""
    return int(round(fraction * n)) if fraction > 0 else 0


def check_data(train_data: ImageDataset, eval_data: ImageDataset | None, fraction: float) -> None:
    """Refuse data that cannot train, pick an epoch or be reported on, before anything is written to --out.

    A held-out split that rounds to 0 images would silently turn ``select: best`` into ``last``, so it is refused
    rather than skipped: the user asked for one (holdout_fraction > 0).
    """
    n = len(train_data)
    if n == 0:
        raise UserError(f"no samples to train on: --data {train_data.source} has 0 images", "pass training data with at least one image")
    if eval_data is not None and len(eval_data) == 0:
        raise UserError(f"no samples to evaluate on: --eval-data {eval_data.source} has 0 images",
                        "pass evaluation data with at least one image, or leave --eval-data out to report on the held-out split")
    if fraction > 0 and holdout_count(n, fraction) == 0:
        raise_fraction = f"raise holdout_fraction to at least {1 / n:.3g}" if 1 / n <= 0.5 else "use more training data"
        other = ("--set holdout_fraction=0 to save the last epoch" if eval_data is not None
                 else "pass --eval-data with --set holdout_fraction=0 (the last epoch is then saved)")
        raise UserError(f"the held-out split of {n} images at holdout_fraction {fraction:g} rounds to 0 images",
                        f"{raise_fraction}, or {other}")


def split_holdout(data: ImageDataset, fraction: float, seed: int) -> tuple[ImageDataset, ImageDataset | None]:
    """(training part, held-out part) from a seeded permutation; no held-out part for fraction 0.

    A fraction that rounds to 0 images also gives none: :func:`check_data` refuses that case first.
    """
    count = holdout_count(len(data), fraction)
    if count == 0:
        return data, None
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(step_seed(seed, 0x401D)))
    holdout = data.take(order[:count])
    holdout.source = f"{data.source} (held-out {count})"
    return data.take(order[count:]), holdout


def augment(x: Tensor, config: RecipeConfig, generator: torch.Generator, rank: int = 0, world_size: int = 1) -> Tensor:
    """CIFAR-style augmentation: random crop after zero padding and/or horizontal flip.

    The random parameters are drawn for the whole global batch (``len(x) * world_size``) and
    this process takes its share (positions ``rank::world_size``, as ``DistributedSampler`` lays
    batches out), so a run's augmentation does not depend on the number of processes.
    """
    if config.augment == "none":
        return x
    batch, channels, height, width = x.shape
    total = batch * world_size
    if "crop" in config.augment and config.crop_padding > 0:
        pad = config.crop_padding
        offsets = torch.randint(0, 2 * pad + 1, (total, 2), generator=generator)[rank::world_size].to(x.device)
        padded = F.pad(x, (pad, pad, pad, pad))
        rows = offsets[:, 0, None] + torch.arange(height, device=x.device)
        cols = offsets[:, 1, None] + torch.arange(width, device=x.device)
        index = torch.arange(batch, device=x.device)[:, None, None, None]
        x = padded[index, torch.arange(channels, device=x.device)[None, :, None, None], rows[:, None, :, None], cols[:, None, None, :]]
    if "flip" in config.augment:
        flip = (torch.rand(total, generator=generator) < 0.5)[rank::world_size].to(x.device)
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    return x


# ---------------------------------------------------------------------------------------------
# optimiser and learning-rate schedule
# ---------------------------------------------------------------------------------------------
def build_optimizer(model: nn.Module, config: RecipeConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, betas=tuple(config.adam_betas), weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov and config.momentum > 0,
                           weight_decay=config.weight_decay)


def learning_rate(config: RecipeConfig, epoch: int, step: int, steps_per_epoch: int) -> float:
    """Learning rate of a step: linear warm-up, then step / cosine / onecycle / constant.

    ``step``: lr × gamma^(milestones passed), a milestone m taking effect from epoch index
    max(1, round(m·epochs)) (0-based; the first epoch always runs at the full rate).
    ``cosine``: half cosine from lr to 0 after the warm-up. ``onecycle``: linear up to lr at
    ``warmup_epochs``, then linear down to 0 (a triangle, as in fast adversarial training).
    (``config.lr_warmup_epochs`` is ``warmup_epochs`` unless a recipe gives that name another meaning.)
    """
    position = epoch + step / steps_per_epoch  # epochs done, fractional
    warmup = config.lr_warmup_epochs
    if warmup > 0 and position < warmup:
        return config.lr * position / warmup
    if config.schedule == "step":
        passed = sum(1 for m in config.milestones if epoch >= max(1, round(m * config.epochs)))
        return config.lr * config.gamma**passed
    remaining = max(config.epochs - warmup, 1e-12)
    done = min(max((position - warmup) / remaining, 0.0), 1.0)
    if config.schedule == "cosine":
        return config.lr * 0.5 * (1 + math.cos(math.pi * done))
    if config.schedule == "onecycle":
        return config.lr * (1 - done)
    return config.lr


# ---------------------------------------------------------------------------------------------
# the training attack
# ---------------------------------------------------------------------------------------------
class TrainingPGD(Attack):
    """PGD as the recipes' official training code runs it (model in eval mode: :class:`Attack`).

    Unlike the evaluation PGD (which keeps the first iterate that fools the model), it
    returns the *last* iterate, maximises the loss the recipe asks for
    (:meth:`Recipe.attack_loss`), and starts from a uniform point of the ball (Madry) or from
    x + σ·N(0, I) (MART, TRADES; not projected, as in their code). The start is drawn from
    ``generator`` for the whole global batch and this process takes its share, like the
    augmentation, so it does not depend on the number of processes.
    """

    name = "training-pgd"

    def __init__(self, eps: float, steps: int, alpha: float, start: str, start_std: float,
                 attack_loss: Callable[[nn.Module, Tensor, Tensor], LossFn], rank: int = 0, world_size: int = 1):
        super().__init__(eps, "linf")
        self.steps, self.alpha, self.start, self.start_std = int(steps), float(alpha), start, float(start_std)
        self.attack_loss = attack_loss
        self.rank, self.world_size = rank, world_size
        self.generator: torch.Generator | None = None  # the engine sets one per step

    @classmethod
    def for_recipe(cls, recipe: Recipe, rank: int = 0, world_size: int = 1) -> "TrainingPGD":
        c = recipe.config
        return cls(c.eps, c.attack_steps, c.attack_alpha, c.attack_start, c.attack_start_std, recipe.attack_loss, rank, world_size)

    def start_point(self, x: Tensor) -> Tensor:
        if self.start == "none":
            return x.clone()
        shape = (x.shape[0] * self.world_size, *x.shape[1:])
        draw = torch.randn if self.start == "normal" else torch.rand
        noise = draw(shape, generator=self.generator)[self.rank::self.world_size].to(device=x.device, dtype=x.dtype)
        if self.start == "normal":
            return x + self.start_std * noise
        return self.project(x + self.eps * (2 * noise - 1), x)

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        loss_fn = self.attack_loss(model, x, y)
        x_adv = self.start_point(x)
        for _ in range(self.steps):
            _, grad, _ = self.gradient(model, x_adv, y, loss_fn)
            x_adv = self.project(self.step(x_adv, grad, self.alpha), x)
        return x_adv

    def __repr__(self) -> str:
        return f"TrainingPGD(eps={self.eps:.5g}, steps={self.steps}, alpha={self.alpha:.5g}, start={self.start})"


def training_step(net: nn.Module, model: nn.Module, recipe: Recipe, attack: Attack | None, x: Tensor, y: Tensor,
                  autocast: Callable[[], contextlib.AbstractContextManager]) -> Tensor:
    """The loss of one batch: the attack on ``model`` (eval mode), then ``recipe.loss`` on ``net`` (train mode).

    ``net`` is ``model`` itself, or its DDP wrapper (the attack runs on the bare module so that
    its input-gradient passes never touch DDP's gradient synchronisation).
    """
    with autocast():
        with recipe.attack_context(model):
            x_adv = attack(model, x, y) if attack is not None else x
        return recipe.loss(net, x, y, x_adv)


# ---------------------------------------------------------------------------------------------
# per-epoch monitoring
# ---------------------------------------------------------------------------------------------
def monitor(model: nn.Module, data: ImageDataset | None, config: RecipeConfig, seed: int, dist: Distributed,
            batch_size: int, draws: int = 1) -> tuple[float | None, float | None]:
    """(clean, PGD robust) accuracy of ``data`` in eval mode, split over the processes.

    ``draws`` > 1 (a randomised model): PGD gradients are averaged over that many draws, clean accuracy is the
    mean over draws and a point is robust only if correct on every re-scoring draw, as in ``hardenctl eval``.
    """
    if data is None or len(data) == 0:
        return None, None
    shard = data.take(torch.arange(dist.rank, len(data), dist.world_size))
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        pgd = PGD(config.eps, "linf", eot_samples=draws, steps=config.monitor_steps, alpha=config.eps / 4)
        result = run_suite(model, shard, [pgd], config.eps, "linf", batch_size, seed, draws, device)
    finally:
        model.train(was_training)
    clean, robust = dist.sum([float(result.clean_correct.sum()), float(result.robust.sum())])
    return clean / len(data), robust / len(data)


# ---------------------------------------------------------------------------------------------
# checkpoints (weights_only-loadable: tensors and plain containers only)
# ---------------------------------------------------------------------------------------------
def checkpoint_path(out_dir: Path, epoch: int) -> Path:
    return Path(out_dir) / CHECKPOINT_DIR / f"epoch_{epoch:04d}.pt"


def latest_checkpoint(out_dir: Path) -> Path | None:
    files = sorted((Path(out_dir) / CHECKPOINT_DIR).glob("epoch_*.pt"))
    return files[-1] if files else None


def read_checkpoint_state(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    try:
        return torch.load(str(path), map_location=device, weights_only=True)
    except Exception as exc:
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise UserError(f"cannot read training checkpoint {path} ({reason})", "delete it to resume from the epoch before") from None


def _run_key(recipe: Recipe, seed: int, input_sha256: str | None, train_sha256: str) -> dict[str, Any]:
    return {"recipe": recipe.name, "config": recipe.config.to_dict(), "seed": seed,
            "input_sha256": input_sha256, "train_data_sha256": train_sha256}


def _check_resume_key(saved: dict[str, Any], current: dict[str, Any], path: Path) -> None:
    differs = [k for k in current if saved.get(k) != current[k]]
    if "config" in differs:
        differs.remove("config")
        differs += [f"config.{k}" for k in current["config"] if saved["config"].get(k) != current["config"][k]]
    if differs:
        raise UserError(f"cannot resume from {path}: this run differs in {', '.join(differs)}",
                        "resume with the same checkpoint, data, recipe, --set values and --seed, or use a new --out")


# ---------------------------------------------------------------------------------------------
# the loop
# ---------------------------------------------------------------------------------------------
@dataclass
class TrainResult:
    history: list[dict[str, Any]]
    best_epoch: int  # 1-based
    last_epoch: int


def select_best(history: list[dict[str, Any]], by: str = "robust", epochs: Iterable[int] | None = None) -> int:
    """The epoch (1-based) with the highest held-out ``by`` accuracy (robust or clean; ties: the other, then later).

    Only ``epochs`` (default: all) compete (:meth:`Recipe.selectable_epochs`); with none of them scored, the last epoch.
    """
    other = "clean" if by == "robust" else "robust"
    allowed = set(epochs) if epochs is not None else None
    scored = [(h[f"holdout_{by}_accuracy"], h[f"holdout_{other}_accuracy"] or 0.0, h["epoch"]) for h in history
              if h.get(f"holdout_{by}_accuracy") is not None and (allowed is None or h["epoch"] in allowed)]
    return max(scored)[2] if scored else history[-1]["epoch"]


def write_train_log(path: Path, history: list[dict[str, Any]]) -> None:
    atomic_write(path, "".join(json.dumps(record) + "\n" for record in history))


def train(model: ImageClassifier, recipe: Recipe, train_set: ImageDataset, holdout: ImageDataset | None,
          options: RunOptions, dist: Distributed, run_key: dict[str, Any],
          progress: TrainProgress | None = None, log: Log | None = None) -> TrainResult:
    """Train ``model`` in place with ``recipe``; checkpoints after every epoch into ``out_dir/checkpoints``."""
    from torch.utils.data.distributed import DistributedSampler

    config = recipe.config
    device = next(model.parameters()).device
    amp_dtype = resolve_amp(options.amp, device)
    net: nn.Module = model
    if dist.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = build_optimizer(model, config)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    attack = TrainingPGD.for_recipe(recipe, dist.rank, dist.world_size) if config.attack_steps > 0 else None
    memory_format = torch.channels_last if options.channels_last else torch.contiguous_format

    def autocast():
        return torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()

    history: list[dict[str, Any]] = []
    start_epoch = 0
    if options.resume and (last := latest_checkpoint(options.out_dir)) is not None:
        state = read_checkpoint_state(last, device)
        _check_resume_key(state["run"], run_key, last)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        history, start_epoch = list(state["history"]), int(state["epoch"])
        if log:
            log(f"resuming from {last} (epoch {start_epoch} of {config.epochs} done)")

    local_batch = config.batch_size // dist.world_size
    steps = len(train_set) // config.batch_size
    sampler = DistributedSampler(train_set, num_replicas=dist.world_size, rank=dist.rank, shuffle=True,  # type: ignore[arg-type]
                                 seed=options.seed, drop_last=False)
    train_monitor = train_set.head(config.monitor_n)
    holdout_monitor = holdout.head(config.monitor_n) if holdout is not None else None
    monitor_batch = max(local_batch, 64)
    draws = recipe.monitor_eot()
    for epoch in range(start_epoch, config.epochs):
        epoch_started = time.perf_counter()
        sampler.set_epoch(epoch)
        order = torch.tensor(list(sampler), dtype=torch.long)
        stage = f"epoch {epoch + 1}/{config.epochs}"
        model.train()
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        lr = config.lr
        recipe.begin_epoch(epoch)
        for step in range(steps):
            lr = learning_rate(config, epoch, step, steps) * recipe.lr_factor(epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
            index = order[step * local_batch:(step + 1) * local_batch]
            x = train_set.x[index]
            x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
            generator = torch.Generator().manual_seed(step_seed(options.seed, epoch, step))  # augmentation, attack start
            x = augment(x, config, generator, dist.rank, dist.world_size)
            x = x.to(device, non_blocking=True).contiguous(memory_format=memory_format)
            y = train_set.y[index].to(device, non_blocking=True)
            if attack is not None:
                attack.generator = generator
            torch.manual_seed(step_seed(options.seed, epoch, step, dist.rank))  # anything else random, e.g. dropout
            loss = training_step(net, model, recipe, attack, x, y, autocast)
            if not torch.isfinite(loss):
                raise UserError(f"the training loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}",
                                "lower the learning rate (--lr) or set grad_clip (--set grad_clip=1)")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if config.grad_clip > 0:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            loss_sum += loss.detach()
            if progress:
                progress(stage, step + 1, steps, {"loss": float(loss_sum) / (step + 1)})
        train_seconds = time.perf_counter() - epoch_started
        (loss_total,) = dist.sum([float(loss_sum)])
        train_clean, train_robust = monitor(model, train_monitor, config, options.seed, dist, monitor_batch, draws)
        holdout_clean, holdout_robust = monitor(model, holdout_monitor, config, options.seed, dist, monitor_batch, draws)
        record = {
            "epoch": epoch + 1, "loss": loss_total / max(steps * dist.world_size, 1), "lr": lr,
            "train_clean_accuracy": train_clean, "train_robust_accuracy": train_robust,
            "holdout_clean_accuracy": holdout_clean, "holdout_robust_accuracy": holdout_robust,
            "seconds": time.perf_counter() - epoch_started, "train_seconds": train_seconds,
            "images_per_second": steps * config.batch_size / max(train_seconds, 1e-9),
        }
        history.append(record)
        if progress:
            progress(stage, steps, steps, record)
        if dist.is_main:
            state = {"format": "hardenctl-train-state", "epoch": epoch + 1, "model": model.state_dict(),
                     "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(), "history": history, "run": run_key}
            with atomic_path(checkpoint_path(options.out_dir, epoch + 1)) as tmp:
                torch.save(state, str(tmp))
            write_train_log(Path(options.out_dir) / "train_log.jsonl", history)
    if not history:
        raise UserError("nothing to train: 0 epochs", "pass --epochs 1 or more")
    return TrainResult(history, select_best(history, recipe.selection, recipe.selectable_epochs()[0]), history[-1]["epoch"])


def percent(value: float | None, digits: int = 2) -> str:
    """``0.4567`` → ``45.67%``; None → ``n/a`` (a metric that was not measured)."""
    return "n/a" if value is None else f"{value:.{digits}%}"


def describe_epoch(record: dict[str, Any]) -> str:
    """One line of an epoch's numbers (for progress bars and logs)."""
    return (f"loss {record['loss']:.4f}, lr {record['lr']:.3g}, "
            f"train clean/robust {percent(record['train_clean_accuracy'], 1)}/{percent(record['train_robust_accuracy'], 1)}, "
            f"held-out clean/robust {percent(record['holdout_clean_accuracy'], 1)}/{percent(record['holdout_robust_accuracy'], 1)}, "
            f"{record['seconds']:.1f} s")


# ---------------------------------------------------------------------------------------------
# the before/after report
# ---------------------------------------------------------------------------------------------
@dataclass
class HardenReport:
    """Input model vs hardened model (same attacks, seed and samples), plus the training curves."""

    recipe: str
    recipe_source: str
    recipe_config: dict[str, Any]
    selected: str  # "best" or "last"
    selected_epoch: int
    best_epoch: int
    last_epoch: int
    input: Any  # Report of the input model
    hardened: Any  # Report of the model in model.safetensors
    history: list[dict[str, Any]]
    input_checkpoint: dict[str, Any]
    data: dict[str, Any]
    runtime: dict[str, Any]
    other: Any = None  # Report of the other candidate (last when best is saved, or best) when it differs
    other_label: str | None = None
    interpretation: str | None = None
    notes: list[str] = field(default_factory=list)
    selected_by: str = "robust"  # which held-out accuracy picked the best epoch (Recipe.selection)
    selectable_epochs: list[int] = field(default_factory=list)  # the epochs the best was chosen among (Recipe.selectable_epochs)
    selectable: str = "every epoch"  # what those epochs are, in words
    monitor_eot: int = 1  # EOT draws of the per-epoch monitor that scored them (Recipe.monitor_eot)
    extra_evaluations: dict[str, Any] = field(default_factory=dict)  # label -> Report of the saved model evaluated otherwise (e.g. AToP's BPDA)
    schema_version: str = SCHEMA_VERSION

    def headline(self) -> str:
        """One line, led by what the recipe aims at: clean accuracy (``selected_by: clean``) or robust accuracy."""
        clean = (f"clean accuracy {self.input.clean_accuracy:.2%} → {self.hardened.clean_accuracy:.2%} "
                 f"({100 * (self.hardened.clean_accuracy - self.input.clean_accuracy):+.2f} points)")
        robust = (f"robust accuracy {self.input.robust_accuracy:.2%} → {self.hardened.robust_accuracy:.2%} "
                  f"({100 * (self.hardened.robust_accuracy - self.input.robust_accuracy):+.2f} points)")
        return f"{clean}; {robust}" if self.selected_by == "clean" else f"{robust}; {clean}"

    def selection_label(self) -> str:
        """How the best epoch was scored and, when not every epoch competed, among which (e.g. AToP's fine-tuning epochs)."""
        what = "clean accuracy" if self.selected_by == "clean" else f"PGD-{self.recipe_config['monitor_steps']} robust accuracy"
        if self.monitor_eot > 1:
            what += f" with EOT over {self.monitor_eot} draws"
        epochs = self.selectable_epochs
        if epochs and epochs != list(range(1, self.last_epoch + 1)):
            span = f"epoch {epochs[0]}" if len(epochs) == 1 else f"epochs {epochs[0]}–{epochs[-1]}"
            what += f", among {span} ({self.selectable})"
        return what

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def columns(self) -> list[tuple[str, Any]]:
        cols = [("input model", self.input), (f"hardened ({self.selected}, epoch {self.selected_epoch})", self.hardened)]
        if self.other is not None:
            cols.append((self.other_label or "other", self.other))
        return cols + list(self.extra_evaluations.items())

    def comparison_rows(self) -> list[tuple[str, list[str]]]:
        cols = [report for _, report in self.columns()]
        rows = [("clean", [f"{r.clean_accuracy:.2%}" for r in cols])]
        for name in cols[0].attacks:
            rows.append((f"after {name}", [f"{r.attacks.get(name, float('nan')):.2%}" for r in cols]))
        rows.append(("robust (worst case)", [f"{r.robust_accuracy:.2%}" for r in cols]))
        rows.append(("checks passed", [f"{len(r.checks) - len(r.failed_checks)}/{len(r.checks)}" for r in cols]))
        return rows

    def to_markdown(self) -> str:
        ev = self.hardened
        headline = self.headline()
        lines = [
            "# hardenctl harden report", "",
            f"**{headline[0].upper()}{headline[1:]}**", "",
            f"Recipe `{self.recipe}` ({self.recipe_source}) trained on `{self.data['train']}` "
            f"({self.data['train_n']} images; {self.data['holdout_n']} held out to pick the epoch), "
            f"starting from `{self.input_checkpoint['path']}` (sha256 `{self.input_checkpoint['sha256']}`).", "",
            f"`model.safetensors` holds the **{self.selected}** epoch: epoch {self.selected_epoch} of {self.last_epoch} "
            f"(best by held-out {self.selection_label()}: epoch {self.best_epoch}; "
            f"last: epoch {self.last_epoch}).",
            "",
        ]
        if self.interpretation:
            lines += [f"Interpretation (our design, not the paper's): {self.interpretation}", ""]
        lines += [
            "## Before and after", "",
            f"Same attacks (suite `{ev.suite}`: {', '.join(ev.attack_list)}), seed {ev.seed}, the same n = {ev.n} samples of "
            f"`{ev.data.get('source')}`, {ev.norm} ε = {ev.eps:.5g}.", "",
            "| metric | " + " | ".join(label for label, _ in self.columns()) + " |",
            "|---" * (len(self.columns()) + 1) + "|",
        ]
        lines += [f"| {name} | " + " | ".join(values) + " |" for name, values in self.comparison_rows()]
        eot = (f", EOT over {self.monitor_eot} draws: gradients averaged, clean accuracy the mean over draws, robust only if "
               "correct on every draw" if self.monitor_eot > 1 else "")
        lines += ["", "## Training curves", "",
                  "Per epoch: mean training loss, learning rate at the epoch's end, clean and PGD robust accuracy (eval mode, "
                  f"ε = {self.recipe_config['eps']:.5g}{eot}) on up to {self.recipe_config['monitor_n']} training and held-out images.", "",
                  "| epoch | loss | lr | train clean | train robust | held-out clean | held-out robust | seconds | |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for h in self.history:
            mark = " ".join(m for m, hit in (("best", h["epoch"] == self.best_epoch), ("last", h["epoch"] == self.last_epoch),
                                             ("**saved**", h["epoch"] == self.selected_epoch)) if hit)
            lines.append(f"| {h['epoch']} | {h['loss']:.4f} | {h['lr']:.4g} | {percent(h['train_clean_accuracy'])} | "
                         f"{percent(h['train_robust_accuracy'])} | {percent(h['holdout_clean_accuracy'])} | "
                         f"{percent(h['holdout_robust_accuracy'])} | {h['seconds']:.1f} | {mark} |")
        lines += ["", "## Checks", ""]
        for label, report in self.columns():
            failed = report.failed_checks
            lines.append(f"- {label}: " + ("all passed" if not failed else "FAILED " + "; ".join(f"{c.name} ({c.detail})" for c in failed)))
        lines += ["", "## Recipe configuration (resolved)", "", "| key | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in self.recipe_config.items()]
        lines += ["", f"Training steps: {self.runtime['train_seconds']:.1f} s (per-epoch monitoring excluded) on "
                      f"{self.runtime['device']} × {self.runtime['world_size']} process(es) "
                      f"(amp {self.runtime['amp']}, channels_last {self.runtime['channels_last']}); hardenctl {__version__}.", ""]
        lines += [f"Note: {note}" for note in self.notes]
        return "\n".join(lines) + "\n"

    def rich_table(self):
        from rich.table import Table

        ev = self.hardened
        table = Table(title=f"{self.recipe} · {ev.norm} ε={ev.eps:.4g} · n={ev.n} · suite {ev.suite}")
        table.add_column("metric")
        for label, _ in self.columns():
            table.add_column(label, justify="right")
        for name, values in self.comparison_rows():
            table.add_row(name, *values)
        return table


# ---------------------------------------------------------------------------------------------
# the whole job
# ---------------------------------------------------------------------------------------------
@dataclass
class HardenResult:
    report: HardenReport
    model_path: Path
    out_dir: Path


def _same_evaluation(report: Any, info: Any, data: ImageDataset, config: EvalConfig) -> bool:
    """Whether ``report`` evaluated this model on these samples with these attacks, seed and ε.

    A report does not record APGD steps or Square queries: the caller vouches for those.
    """
    sha = getattr(info, "sha256", None)
    attacks = [repr(a) for a in config.build_attacks(config.eps, report.eot_samples)]
    same_settings = (report.suite, report.attack_list, report.seed, report.eps, report.norm, report.n) == (
        config.suite_name(), attacks, config.seed, config.eps, config.norm, len(data))
    wanted = {"classes": list(config.protected), "cost": float(config.protected_cost)} if config.protected else None
    has = {k: report.extra["protected"][k] for k in ("classes", "cost")} if "protected" in report.extra else None
    return sha is not None and report.model_sha256 == sha and report.data_sha256 == data.sha256() and same_settings and wanted == has


def check_out_dir(out_dir: Path, resume: bool) -> None:
    """Refuse to mix two runs in one directory."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir} is a file", "pass a directory")
    if resume:
        return
    if latest_checkpoint(out_dir) is not None or (out_dir / "model.safetensors").exists():
        raise UserError(f"--out {out_dir} already holds a harden run", "pass --resume to continue it, or a new --out directory")


def _resolved_recipe_yaml(recipe: Recipe) -> str:
    header = (f"# resolved recipe written by hardenctl {__version__} (from {recipe.source or recipe.name} "
              "with --set/--epochs/--batch-size/--lr applied); usable as --recipe PATH\n")
    return header + yaml.safe_dump({"recipe": recipe.name, **recipe.config.to_dict()}, sort_keys=False)


def harden(model: ImageClassifier, recipe: Recipe, train_data: ImageDataset, eval_data: ImageDataset | None,
           options: RunOptions, progress: TrainProgress | None = None, log: Log | None = None) -> HardenResult | None:
    """Train ``model`` with ``recipe``, then evaluate input and result and write ``options.out_dir``.

    Everything a user can get wrong is checked before the first file is written. Returns None
    on DDP ranks other than 0, which write nothing.
    """
    config = recipe.config
    dist = Distributed.from_env()
    if config.batch_size % dist.world_size:
        raise UserError(f"batch_size {config.batch_size} does not split over {dist.world_size} processes",
                        f"pass a --batch-size divisible by {dist.world_size}")
    check_data(train_data, eval_data, config.holdout_fraction)
    train_set, holdout = split_holdout(train_data, config.holdout_fraction, options.seed)
    if len(train_set) < config.batch_size:
        raise UserError(f"batch_size {config.batch_size} is larger than the {len(train_set)} training images",
                        f"pass --batch-size {max(1, len(train_set) // 2)} or more data")
    if eval_data is None and holdout is None:
        raise UserError("no evaluation data: holdout_fraction is 0 and --eval-data is not given",
                        "pass --eval-data or --set holdout_fraction=0.1")
    eval_config = EvalConfig(n=options.eval_n, seed=options.seed, **options.eval_options)
    if getattr(config, "protected", None):  # a cost-sensitive recipe: report its protected classes before and after
        eval_config.protected, eval_config.protected_cost = list(config.protected), float(config.cost)
    eval_config.build_attacks(eval_config.eps, 1)  # bad suite/attack names fail before any training
    check_out_dir(Path(options.out_dir), options.resume)
    device = resolve_device(options.device)
    if dist.world_size > 1 and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
    resolve_amp(options.amp, device)

    input_model = copy.deepcopy(model).cpu().eval() if dist.is_main else None
    run_key = _run_key(recipe, options.seed, getattr(model.info, "sha256", None), train_data.sha256())
    memory_format = torch.channels_last if options.channels_last else torch.contiguous_format
    trained = recipe.prepare(model, seed=options.seed).to(device).to(memory_format=memory_format)  # new modules drawn from --seed
    dist.start(device)
    try:
        result = train(trained, recipe, train_set, holdout, options, dist, run_key, progress, log)
    finally:
        dist.close()
    if not dist.is_main:
        return None
    runtime = {"device": str(device), "world_size": dist.world_size, "amp": amp_label(resolve_amp(options.amp, device)),
               "channels_last": options.channels_last, "train_seconds": sum(h["train_seconds"] for h in result.history)}
    data = {"train": train_data.source, "train_n": len(train_set), "holdout_n": len(holdout) if holdout is not None else 0}
    return _evaluate_and_write(input_model, trained, recipe, result, eval_data if eval_data is not None else holdout,
                               eval_config, options, data, runtime, holdout is None, eval_data is None, progress, log)


def _evaluate_and_write(input_model: ImageClassifier, trained: ImageClassifier, recipe: Recipe, result: TrainResult,
                        eval_set: ImageDataset, eval_config: EvalConfig, options: RunOptions, data: dict[str, Any],
                        runtime: dict[str, Any], no_holdout: bool, eval_is_holdout: bool,
                        progress: TrainProgress | None, log: Log | None) -> HardenResult:
    """Evaluate input, saved and (when different) other candidate epoch alike; write every output file."""
    out_dir, info, config = Path(options.out_dir), input_model.info, recipe.config
    device = next(trained.parameters()).device

    def evaluate_model(candidate: nn.Module, label: str):
        if log:
            log(f"evaluating the {label} on {len(eval_set.head(options.eval_n))} images of {eval_set.source}")
        return evaluate(candidate.to(device).eval(), eval_set, eval_config, progress)

    def exported(epoch: int) -> ImageClassifier:
        """The model of a finished epoch as it would ship (``recipe.export``), not yet saved."""
        trained.load_state_dict(read_checkpoint_state(checkpoint_path(out_dir, epoch), device)["model"])
        candidate = recipe.export(copy.deepcopy(trained))
        # the info the recipe left on the model (prepare/export may record surgery there), minus the input's identity
        candidate.info = dataclasses.replace(candidate.info, path=None, sha256=None)
        return candidate

    selected = "last" if config.select == "last" or no_holdout else "best"
    selected_epoch, other_epoch = ((result.best_epoch, result.last_epoch) if selected == "best"
                                   else (result.last_epoch, result.best_epoch))
    reuse = options.input_report
    if reuse is not None and _same_evaluation(reuse, info, eval_set.head(options.eval_n), eval_config):
        before = reuse
    else:
        before = evaluate_model(input_model, "input model")
    final = exported(selected_epoch)
    after = evaluate_model(final, f"hardened model (epoch {selected_epoch})")
    report_extra = getattr(recipe, "report_extra", None)  # recipe-specific sections, e.g. cost-sensitive's Min-Max statistics
    if report_extra is not None:
        after.extra.update(report_extra(input_model, final))
    extra_evaluations = {}  # the saved model evaluated otherwise, e.g. AToP's classifier-only (BPDA) attack
    for label, overrides in getattr(recipe, "extra_evaluations", lambda _: {})(final).items():
        if log:
            log(f"evaluating the hardened model: {label}")
        extra_evaluations[label] = evaluate(final.to(device).eval(), eval_set, dataclasses.replace(eval_config, **overrides), progress)
    other = other_label = None
    if other_epoch != selected_epoch:
        other_label = f"{'last' if selected == 'best' else 'best'} (epoch {other_epoch})"
        other = evaluate_model(exported(other_epoch), f"{other_label} model")

    metadata = {
        "recipe": recipe.name, "recipe_config": config.to_dict(), "recipe_source": recipe.source,
        "input_checkpoint_sha256": info.sha256, "epoch": selected_epoch, "selected": selected,
        "trained_by": f"hardenctl harden --recipe {recipe.name}",
    }
    model_path = save_model(final, out_dir / "model.safetensors", metadata)
    after.model_sha256, after.model["path"] = sha256_file(model_path), str(model_path)
    selectable, selectable_label = recipe.selectable_epochs()
    notes = []
    if eval_is_holdout:
        notes.append("the report evaluates the held-out split that also picked the best epoch (pass --eval-data for an independent set)")
    if no_holdout:
        notes.append("holdout_fraction is 0: no held-out split, the last epoch is saved")
    if after.randomized:
        notes.append(f"the hardened model is randomised: its numbers use EOT over {after.eot_samples} draws (clean accuracy is the "
                     "mean over draws; a point is robust only if correct on every draw)")
    notes += [section["summary"] for section in after.extra.values() if isinstance(section, dict) and "summary" in section]
    report = HardenReport(
        recipe=recipe.name, recipe_source=str(recipe.source or recipe.name), recipe_config=config.to_dict(),
        selected=selected, selected_epoch=selected_epoch, best_epoch=result.best_epoch, last_epoch=result.last_epoch,
        input=before, hardened=after, other=other, other_label=other_label, history=result.history,
        input_checkpoint={"path": info.path, "sha256": info.sha256},
        data={**data, "eval": eval_set.source, "eval_n": after.n}, runtime=runtime,
        interpretation=recipe.interpretation, notes=notes, selected_by=recipe.selection, extra_evaluations=extra_evaluations,
        selectable_epochs=list(selectable), selectable=selectable_label, monitor_eot=recipe.monitor_eot(),
    )
    atomic_write(out_dir / "recipe.yaml", _resolved_recipe_yaml(recipe))
    write_train_log(out_dir / "train_log.jsonl", result.history)
    atomic_write(out_dir / "report.json", report.to_json())
    atomic_write(out_dir / "report.md", report.to_markdown())
    return HardenResult(report, model_path, out_dir)


__all__ = ["HardenReport", "HardenResult", "RunOptions", "TrainingPGD", "augment", "check_data", "harden", "holdout_count",
           "learning_rate", "select_best", "split_holdout", "train", "training_step"]
