"""Data parallelism for training: DDP (replicated) or FSDP2 (sharded).

``train.parallel`` picks the engine (docs/DISTRIBUTED.md has the launch commands):

- ``"ddp"``: :class:`~torch.nn.parallel.DistributedDataParallel` when there is more than one
  rank. Gradients are averaged over ranks, so with equal per-rank batches the update is the
  gradient of the global-batch mean; accumulation micro-batches run under ``no_sync``.
  Checkpoints are full-state safetensors files, written by rank 0.
- ``"fsdp"``: FSDP2 (``fully_shard``) of every block, then the root, when a process group exists
  (one process without a launcher trains the plain module). Parameters, gradients and AdamW
  moments are sharded DTensors; gradients are reduce-scattered as a mean (the same update as
  DDP); accumulation micro-batches skip the reduce-scatter (``set_requires_gradient_sync``).
  With ``train.precision == "bf16"`` parameters are all-gathered in bf16 and gradients reduced
  in fp32 over fp32 sharded master weights; forward inputs are NOT cast (the diffusion times
  stay fp32), autocast casts the activations as in the DDP path.

The EMA is sharded exactly like the model (a second ``fully_shard`` of a copy made before
sharding): each rank updates its own shard with no communication and holds 1/W of an fp32
copy, where a gathered EMA would cost a full fp32 model per rank and an all-gather per step.

Checkpoints of both (full-state for DDP, sharded for FSDP) are written and restored by
:mod:`sfd.training.run_checkpoint`.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor

from sfd import distributed as D
from sfd.config import Config
from sfd.hardware import require_compiler
from sfd.model import LightningDiT
from sfd.model.compile import compile_blocks
from sfd.training.batches import Batch

MODES = ("ddp", "fsdp")


def parallel_mode(cfg: Config) -> str:
    """``train.parallel`` ("ddp" until the config has the field)."""
    mode = getattr(cfg.train, "parallel", "ddp")
    if mode not in MODES:
        raise ValueError(f"train.parallel must be one of {', '.join(MODES)}; got {mode!r}")
    return mode


def prepare(
    model: LightningDiT,
    ema: nn.Module,
    cfg: Config,
    device: torch.device,
    *,
    find_unused: bool = False,
) -> nn.Module:
    """Compile, shard or wrap ``model`` (and shard ``ema`` alike) in place for training.

    Returns the module the training step calls: DDP around ``model``, or ``model`` itself
    (plain, or fully sharded). ``ema`` must be a copy made before this call.
    """
    compile_for_training(model, cfg, device)
    if parallel_mode(cfg) == "fsdp" and D.is_initialized():
        mesh = init_device_mesh(device.type, (D.world_size(),))
        bf16 = cfg.train.precision == "bf16"
        mp_policy = MixedPrecisionPolicy(
            param_dtype=torch.bfloat16 if bf16 else None,
            reduce_dtype=torch.float32,
            cast_forward_inputs=False,
        )
        shard(model, mesh, mp_policy)
        shard(ema, mesh, MixedPrecisionPolicy())
        return model
    if D.world_size() > 1:
        return nn.parallel.DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=find_unused,
        )
    return model


def compile_for_training(model: LightningDiT, cfg: Config, device: torch.device) -> None:
    """What ``train.compile`` asks before training: one ``ConfigError`` if this machine cannot
    build the kernels, then scope "blocks" compiles each block in place (scope "loss": the
    :class:`~sfd.training.step.TrainStep` compiles its loss region)."""
    if not cfg.train.compile:
        return
    require_compiler(device, "train.compile=true", "set train.compile=false")
    if cfg.train.compile_scope == "blocks":
        compile_blocks(model)


def shard(model: nn.Module, mesh: DeviceMesh, mp_policy: MixedPrecisionPolicy) -> None:
    """``fully_shard`` every block, then the root (embedders, final layer, REPA projector)."""
    for block in model.blocks:
        fully_shard(block, mesh=mesh, mp_policy=mp_policy)
    fully_shard(model, mesh=mesh, mp_policy=mp_policy)


def is_sharded(module: nn.Module) -> bool:
    return isinstance(module, FSDPModule)


@contextlib.contextmanager
def grad_sync(module: nn.Module, enabled: bool) -> Iterator[None]:
    """Forward + backward of a micro-batch; ``enabled=False`` keeps gradients local."""
    if enabled:
        yield
    elif isinstance(module, nn.parallel.DistributedDataParallel):
        with module.no_sync():
            yield
    elif is_sharded(module):
        module.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            module.set_requires_gradient_sync(True)
    else:
        yield


def clip_grad_norm(params: list[nn.Parameter], max_norm: float) -> torch.Tensor:
    """Global L2 norm of the gradients (DTensor shards included); clip to ``max_norm`` if > 0."""
    total = torch.nn.utils.get_total_norm([p.grad for p in params], 2.0)
    if isinstance(total, DTensor):
        total = total.full_tensor()  # sharded gradients: the norm over all ranks
    if max_norm > 0:
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, total)
    return total


def pin(batch: Batch) -> Batch:
    """The batch in pinned host memory, so copies to the GPU can be ``non_blocking``."""
    return dataclasses.replace(
        batch,
        **{
            f.name: getattr(batch, f.name).pin_memory()
            for f in dataclasses.fields(batch)
            if getattr(batch, f.name) is not None
        },
    )


def full_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """The whole state dict on CPU: gathered to rank 0 if sharded (others get ``{}``)."""
    if is_sharded(module):
        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_model_state_dict(module, options=opts)
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}
