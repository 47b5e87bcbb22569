"""How a run executes (not what it learns): run options, the DDP process group, mixed precision, seeds."""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from ..errors import UserError

AMP_MODES = ("auto", "off", "bf16", "fp16")

TrainProgress = Callable[..., None]  # (stage, done, total, metrics: dict | None = None)

Log = Callable[[str], None]


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
