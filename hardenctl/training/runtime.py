"""How a run executes (not what it learns): the DDP process group (``hardenctl.distributed``), mixed precision,
seeds; the run's options are :class:`hardenctl.options.HardenOptions`."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable

import torch

from ..distributed import Distributed  # noqa: F401  (re-exported: it lives below both harden and evaluate)
from ..errors import UserError
from ..options import AMP_MODES, HardenOptions  # noqa: F401  (HardenOptions re-exported for the engine's modules)

TrainProgress = Callable[..., None]  # (stage, done, total, metrics: dict | None = None)

Log = Callable[[str], None]


@dataclass(frozen=True)
class Feedback:
    """Where a run tells its caller what it is doing: the progress callback and the log of notes (each optional).

    One object because every part of the engine that reports hands both on together, from ``harden`` down to the
    writing of ``--out``.
    """

    progress: TrainProgress | None = None  # (stage, done, total, metrics=None)
    log: Log | None = None  # one note at a time

    def note(self, line: str) -> None:
        """Log ``line`` when there is a log.

        Args:
            line: the note, one line.
        """
        if self.log:
            self.log(line)


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``--amp`` on ``device`` (None: full precision).

    Args:
        amp: ``auto``, ``off``, ``bf16`` or ``fp16``.
        device: where the run trains (reduced precision needs CUDA).
    """
    if amp not in AMP_MODES:
        raise UserError(
            f"--amp must be one of {', '.join(AMP_MODES)}, got {amp!r}", "pass --amp bf16, --amp fp16 or --amp off"
        )
    if amp == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    if amp != "off" and device.type != "cuda":
        # measured with torch 2.14: CPU bf16 autocast gives run-to-run different, sometimes NaN, conv weight gradients
        raise UserError(f"--amp {amp} needs a CUDA device (CPU autocast is not deterministic)", "use --amp off on CPU")
    return {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def amp_label(dtype: torch.dtype | None) -> str:
    """The report's name of an autocast dtype: ``off``, ``bf16`` or ``fp16``.

    Args:
        dtype: the dtype :func:`resolve_amp` returned.
    """
    return {None: "off", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def step_seed(*parts: int) -> int:
    """A 63-bit seed from integers (seed, epoch, step, ...), the same on every platform.

    Args:
        parts: the integers, in order.
    """
    digest = hashlib.blake2b(repr(tuple(int(p) for p in parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)
