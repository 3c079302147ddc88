"""The one home of process groups. One process runs with no launcher; ``torchrun`` adds ranks.

Entry points open :func:`process_group` (or call :func:`init_from_env` and :func:`shutdown`;
STYLE.md rule 8); library code only asks for the rank and world size, which are 0 and 1 when
``torch.distributed`` is not initialised, and uses the collectives below, each the identity in
one process.

Work split by index: rank r of W takes the contiguous range ``shard_range(n, r, W)``, so
gathering the per-rank rows in rank order (:func:`all_gather_rows`) restores the global order
(which the Inception Score's sequential splits depend on).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def rank_and_world() -> tuple[int, int]:
    return rank(), world_size()


def barrier() -> None:
    if is_initialized():
        dist.barrier()


def init_from_env(device: str | None = None) -> torch.device:
    """Initialise the default process group when launched by torchrun; return this rank's device.

    NCCL on CUDA, gloo on CPU. Under torchrun each rank takes GPU ``LOCAL_RANK``; without its
    variables nothing is initialised and ``device`` (e.g. ``cuda:1``) is used as given.
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    result = torch.device(device)
    want_cuda = result.type == "cuda"
    if want_cuda:
        local = os.environ.get("LOCAL_RANK")
        result = torch.device("cuda", int(local) if local is not None else result.index or 0)
        torch.cuda.set_device(result)
    if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1 and not is_initialized():
        if want_cuda:  # bound to this rank's GPU: barriers and collectives know their device
            dist.init_process_group("nccl", device_id=result)
        else:
            dist.init_process_group("gloo")
    return result


def all_reduce_mean(values: torch.Tensor) -> torch.Tensor:
    """Mean of a tensor over ranks (identity in one process)."""
    if is_initialized():
        values = values.clone()
        dist.all_reduce(values)
        values /= world_size()
    return values


def collective_device() -> torch.device:
    """Where tensors must live for the current backend: the current CUDA device for NCCL."""
    if is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def broadcast_object(obj, src: int = 0):
    """Rank ``src``'s picklable ``obj`` on every rank (identity in one process)."""
    if not is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, device=collective_device())
    return box[0]


def all_gather_object(obj) -> list:
    """Every rank's picklable ``obj``, in rank order (``[obj]`` in one process)."""
    if not is_initialized():
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def shard_range(n: int, rank: int, world: int) -> tuple[int, int]:
    """Contiguous [start, stop) of ``n`` items owned by ``rank`` (sizes differ by at most 1)."""
    return n * rank // world, n * (rank + 1) // world


def all_gather_rows(local: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's (n_r, ...) tensor in rank order; returned on CPU."""
    if not is_initialized():
        return local.cpu()
    device = collective_device()
    count = torch.tensor([len(local)], device=device)
    counts = [torch.zeros_like(count) for _ in range(world_size())]
    dist.all_gather(counts, count)
    longest = int(max(c.item() for c in counts))
    padded = torch.zeros((longest, *local.shape[1:]), dtype=local.dtype, device=device)
    padded[: len(local)] = local.to(device)
    parts = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(parts, padded)
    return torch.cat([p[: int(c.item())].cpu() for p, c in zip(parts, counts, strict=True)])


def shutdown() -> None:
    """Destroy the default process group, if any (call at the end of an entry point)."""
    if is_initialized():
        dist.destroy_process_group()


@contextmanager
def process_group(device: str | None = None) -> Iterator[torch.device]:
    """An entry point's process group: :func:`init_from_env` on entry (yields this rank's
    device), :func:`shutdown` on exit, also after a failure."""
    dev = init_from_env(device)
    try:
        yield dev
    finally:
        shutdown()
