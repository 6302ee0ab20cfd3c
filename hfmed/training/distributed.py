"""What ranks share under torchrun: one set of normalisation statistics, and every evaluated row once.

Each rank reads, trains on and evaluates its own share of the rows (``hfmed.loaders.plan``); what
has to be made common is small:

- BatchNorm's running statistics, which each rank updates from its own batches (DDP broadcasts
  rank 0's before each training forward, and every rank then updates its copy). Before every
  evaluation and every save they are averaged over the ranks with one all-reduce, so that every
  rank evaluates, and rank 0 saves, the same model. Averaging was chosen over ``SyncBatchNorm``
  because it leaves training itself as it is (no collective inside every BatchNorm layer, which
  across nodes costs a round trip per layer per step, and per-rank batch statistics as a one-rank
  run has them) and costs one small all-reduce per evaluation. The average of the ranks' running
  variances ignores the spread between their means, which are estimates of the same population.
- Evaluation outputs: each rank scores its contiguous share of the split in source order (no
  padding, no dropped rows), and the shares are gathered in rank order, which is the split's order.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def running_stat_buffers(model: torch.nn.Module) -> list[torch.Tensor]:
    """The running mean and variance of every normalisation layer that tracks them (BatchNorm 1D/2D/3D)."""
    out = []
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._NormBase) and module.track_running_stats:
            out += [b for b in (module.running_mean, module.running_var) if b is not None]
    return out


@torch.no_grad()
def average_running_stats(model: torch.nn.Module) -> int:
    """Replace each rank's running statistics by their mean over the ranks; returns how many tensors.

    A collective: every rank must call it at the same point.
    """
    _, size = world()
    buffers = running_stat_buffers(model)
    if size == 1 or not buffers:
        return len(buffers)
    flat = torch.cat([b.detach().float().reshape(-1) for b in buffers])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= size
    offset = 0
    for b in buffers:
        n = b.numel()
        b.copy_(flat[offset : offset + n].view_as(b))
        offset += n
    return len(buffers)


def gather_in_rank_order(value: Any) -> list[Any]:
    """Every rank's ``value`` (any picklable object), rank 0's first; the same list on every rank."""
    _, size = world()
    if size == 1:
        return [value]
    out: list[Any] = [None] * size
    dist.all_gather_object(out, value)
    return out
