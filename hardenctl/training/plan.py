"""What stays fixed over a run's epochs: how its batches are cut and placed (:class:`EpochPlan`), and the run they
belong to (:class:`RunContext`: options, processes, plan).

Why objects: the epoch, the lr sweep's candidates and the loop all read the same facts; handing them on as one plan
keeps a candidate's short epoch and a real one alike by construction (the sweep only shortens ``steps``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..recipes import RecipeConfig
from .runtime import Distributed, HardenOptions, resolve_amp


@dataclass(frozen=True)
class EpochPlan:
    """The fixed facts of a run's epochs: the data and its batching, the device, memory format and precision."""

    train_set: Any
    local_batch: int  # this process's share of a global batch
    steps: int  # global batches per epoch
    data_config: Any
    channels: int
    device: torch.device = torch.device("cpu")
    memory_format: torch.memory_format = torch.contiguous_format
    amp_dtype: torch.dtype | None = None  # autocast dtype (None: full precision)

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast to ``amp_dtype`` on the plan's device, or nothing at full precision."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)


@dataclass(frozen=True)
class RunContext:
    """How a run executes, the same for every epoch (and every lr-sweep candidate): what it was asked, its processes,
    its epochs' plan."""

    options: HardenOptions
    dist: Distributed
    plan: EpochPlan

    @classmethod
    def for_model(
        cls, model: nn.Module, config: RecipeConfig, train_set: Any, options: HardenOptions, dist: Distributed
    ) -> RunContext:
        """The context of training ``model`` (already on its device) on ``train_set``.

        Args:
            model: the model to train; its device and its data config (``model.info``) set the plan.
            config: the resolved recipe config (``batch_size``).
            train_set: the images trained on (the held-out split excluded).
            options: the run's options (``channels_last``, ``amp``, ``seed``, ``reading``).
            dist: the processes the global batch is split over.
        """
        device = next(model.parameters()).device
        info = getattr(model, "info", None)
        plan = EpochPlan(
            train_set,
            config.batch_size // dist.world_size,
            len(train_set) // config.batch_size,
            getattr(info, "data_config", None),
            getattr(info, "in_chans", None) or train_set.channels,
            device,
            torch.channels_last if options.channels_last else torch.contiguous_format,
            resolve_amp(options.amp, device),
        )
        return cls(options, dist, plan)


def epoch_order(run: RunContext, epoch: int) -> Tensor:
    """This process's shuffled image positions for ``epoch``, drawn from (seed, epoch) by ``DistributedSampler``.

    Args:
        run: the run (its seed, processes and training images).
        epoch: the epoch (0-based).
    """
    from torch.utils.data.distributed import DistributedSampler

    sampler = DistributedSampler(
        run.plan.train_set,
        num_replicas=run.dist.world_size,
        rank=run.dist.rank,
        shuffle=True,  # type: ignore[arg-type]
        seed=run.options.seed,
        drop_last=False,
    )
    sampler.set_epoch(epoch)
    return torch.tensor(list(sampler), dtype=torch.long)


def ddp_wrapped(model: nn.Module, run: RunContext) -> nn.Module:
    """``model`` in ``DistributedDataParallel`` under torchrun, else ``model`` itself.

    Args:
        model: the model on the run's device.
        run: the run (its processes and device).
    """
    if run.dist.world_size == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device = run.plan.device
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
