"""``--batch-size auto``: the largest batch whose attack passes fit in the memory this process may use.

Why the largest, on a CPU too: an evaluation's time goes into the passes of the points *still robust*, which each
attack takes from one batch at a time. Square makes its 5,000 sequential passes once per batch, however few points
of it are left, and a pass of 5 images costs nearly what a pass of 21 does. Measured on one CPU thread
(``benchmarks/bench_eval_options.py``, 200 CIFAR-10 images): the standard suite took 1.67x as long in batches of 50 as
in one batch of 200, and 1.10x in batches of 100. The largest batch that fits is therefore also the fastest, on a GPU
and on a CPU, up to the whole data (or a process's share of it under torchrun, so that every process gets a batch).

What one image costs is measured, not guessed: the bytes autograd keeps for one input-gradient pass (the attacks'
pass) on a few real images, plus the attack's own copies of the image. The choice depends on the free memory of the
machine, so it is recorded in the report; passing that number as ``--batch-size`` repeats the run exactly.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor, nn

ATTACK_COPIES = 16  # images an attack holds per point besides the pass (x, x_adv, best, previous, gradients, EOT sums)
SHARE = {"cuda": 0.5, "cpu": 0.25}  # of the free memory: the rest is for the data loader, the allocator's slack, others
LARGEST = 4096  # a batch this large already amortises every per-pass cost; larger only delays the first result


def gradient_pass_bytes(model: nn.Module, x: Tensor) -> int:
    """Bytes autograd saves for one input-gradient pass of ``model`` on ``x`` (the tensors backward will need; a
    storage that several operations save, such as a ReLU's output that the next convolution saves too, counts once;
    the weights, saved too, are not per image and count not at all)."""
    saved = 0
    storages = {t.untyped_storage().data_ptr() for t in (*model.parameters(), *model.buffers())}  # not per image

    def pack(tensor: Tensor) -> Tensor:
        nonlocal saved
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in storages:
            storages.add(storage.data_ptr())
            saved += storage.nbytes()
        return tensor

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        x_var = x.detach().clone().requires_grad_(True)
        logits = model(x_var)
        saved += logits.numel() * logits.element_size()
    return saved


def free_memory(device: torch.device) -> int:
    """Bytes this process may still allocate on ``device`` (CUDA: the driver's free count; CPU: MemAvailable)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))


def auto_batch_size(
    model: nn.Module, probe: Tensor, n: int, device: torch.device, world_size: int = 1, free: int | None = None
) -> tuple[int, dict[str, Any]]:
    """``(batch size, how it was chosen)`` for attacking ``n`` images shaped like ``probe`` on ``device``.

    The batch is the largest power of two whose passes fit in this process's share of ``free`` (default: measured)
    memory, capped at one batch per process; the record says what was measured, for the report.
    """
    per_image = gradient_pass_bytes(model, probe) / probe.shape[0] + ATTACK_COPIES * probe[0].numel() * 4
    free = free_memory(device) if free is None else free
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))) if device.type == "cpu" else 1  # processes sharing RAM
    budget = free * SHARE.get(device.type, 0.25) / local
    fits = max(1, int(budget // per_image))
    size = 1 << (fits.bit_length() - 1)  # a power of two: the same choice for a little more or less free memory
    share = -(-n // max(1, world_size))  # every process gets a batch
    chosen = max(1, min(size, share, LARGEST))
    return chosen, {"bytes_per_image": int(per_image), "free_bytes": int(free), "fits": fits, "chosen": chosen}
