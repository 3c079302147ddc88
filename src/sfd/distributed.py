"""Process-group helpers. One process runs with no launcher; ``torchrun`` adds ranks.

Entry points call :func:`init_from_env` (STYLE.md rule 8); library code only asks for the rank
and world size, which are 0 and 1 when ``torch.distributed`` is not initialised.
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

    NCCL on CUDA, gloo on CPU. Without torchrun's variables nothing is initialised.
    """
    want_cuda = (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
    if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1 and not is_initialized():
        dist.init_process_group("nccl" if want_cuda else "gloo")
    if want_cuda:
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device(device or "cpu")


def all_reduce_mean(values: torch.Tensor) -> torch.Tensor:
    """Mean of a tensor over ranks (identity in one process)."""
    if is_initialized():
        values = values.clone()
        dist.all_reduce(values)
        values /= world_size()
    return values
