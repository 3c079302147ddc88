"""Process-group helpers. One process runs with no launcher; ``torchrun`` adds ranks.

Entry points call :func:`init_from_env` (STYLE.md rule 8) and :func:`shutdown`; library code
only asks for the rank and world size, which are 0 and 1 when ``torch.distributed`` is not
initialised, and uses the collectives below, each the identity in one process.
"""

from __future__ import annotations

import os

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


def broadcast_object(obj, src: int = 0):
    """Rank ``src``'s picklable ``obj`` on every rank (identity in one process)."""
    if not is_initialized():
        return obj
    box = [obj]
    device = torch.device("cuda", torch.cuda.current_device()) if _nccl() else None
    dist.broadcast_object_list(box, src=src, device=device)
    return box[0]


def _nccl() -> bool:
    return dist.get_backend() == "nccl"


def shutdown() -> None:
    """Destroy the default process group, if any (call at the end of an entry point)."""
    if is_initialized():
        dist.destroy_process_group()
