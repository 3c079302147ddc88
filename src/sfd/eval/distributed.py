"""The few collectives the evaluator needs; each is the identity without a process group.

Work is split by index: rank r of W takes the contiguous range ``shard_range(n, r, W)``, so
gathering the per-rank rows in rank order restores the global sample order (which the
Inception Score's sequential splits depend on).
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank_and_world() -> tuple[int, int]:
    if not is_distributed():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def shard_range(n: int, rank: int, world: int) -> tuple[int, int]:
    """Contiguous [start, stop) of ``n`` items owned by ``rank`` (sizes differ by at most 1)."""
    return n * rank // world, n * (rank + 1) // world


def collective_device() -> torch.device:
    """Where tensors must live for the current backend: the current CUDA device for NCCL."""
    if is_distributed() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_gather_rows(local: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's (n_r, ...) tensor in rank order; returned on CPU."""
    if not is_distributed():
        return local.cpu()
    device = collective_device()
    count = torch.tensor([len(local)], device=device)
    counts = [torch.zeros_like(count) for _ in range(dist.get_world_size())]
    dist.all_gather(counts, count)
    longest = int(max(c.item() for c in counts))
    padded = torch.zeros((longest, *local.shape[1:]), dtype=local.dtype, device=device)
    padded[: len(local)] = local.to(device)
    parts = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(parts, padded)
    return torch.cat([p[: int(c.item())].cpu() for p, c in zip(parts, counts, strict=True)])


def broadcast_object(obj, src: int = 0):
    """Rank ``src``'s picklable ``obj`` on every rank."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, device=collective_device())
    return box[0]
