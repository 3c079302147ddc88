"""Data parallelism for training: DDP (replicated) or FSDP2 (sharded), and sharded checkpoints.

``train.parallel`` picks the engine (docs/DISTRIBUTED.md has the launch commands):

- ``"ddp"``: :class:`~torch.nn.parallel.DistributedDataParallel` when there is more than one
  rank. Gradients are averaged over ranks, so with equal per-rank batches the update is the
  gradient of the global-batch mean; accumulation micro-batches run under ``no_sync``.
  Checkpoints are the safetensors files of :mod:`sfd.training.checkpoint`, written by rank 0.
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

FSDP checkpoints keep the usual directory (``RUN/checkpoints/step-N/``) and its consolidated
``ema.safetensors`` (so :func:`sfd.load_model` and sampling work unchanged) and hold model, EMA
and optimizer in ``dcp/`` through ``torch.distributed.checkpoint``: keys are parameter names and
shards carry global offsets, so a checkpoint loads on any world size (or with no process group).
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor

from sfd import distributed as D
from sfd.config import Config
from sfd.data.tensor_files import atomic_save_safetensors
from sfd.hardware import require_compiler
from sfd.latents.composite import LatentStats
from sfd.model import LightningDiT
from sfd.training.batches import Batch
from sfd.training.checkpoint import (
    checkpoint_dir,
    checkpoint_metadata,
    checkpoint_write_failed,
    publish_checkpoint,
    write_checksums,
)

MODES = ("ddp", "fsdp")
DCP_DIR = "dcp"


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


def compile_blocks(model: LightningDiT) -> None:
    """``torch.compile`` each transformer block in place (whole blocks, one graph each).

    In place, so parameter names, and therefore checkpoints, are those of the eager model.
    """
    for block in model.blocks:
        block.compile()


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


def _dcp_state(model: nn.Module, ema: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    model_sd, optim_sd = get_state_dict(model, optimizer)
    return {"model": model_sd, "ema": get_model_state_dict(ema), "optimizer": optim_sd}


def save_sharded(
    run_dir: Path,
    *,
    step: int,
    config: Config,
    stats: LatentStats,
    model: nn.Module,
    ema: nn.Module,
    optimizer: torch.optim.Optimizer,
) -> Path:
    """Write a DCP checkpoint (all ranks call) with a consolidated ``ema.safetensors``.

    Every rank writes its shards into one temporary directory (a filesystem all ranks share);
    rank 0 adds the EMA file and renames the directory into place once all ranks are done.
    """
    final = checkpoint_dir(run_dir, step)
    tmp = final.with_name(f".{final.name}.tmp-sharded")
    if D.is_main():
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    D.barrier()
    with _single_process_ok():
        dcp.save(
            _dcp_state(model, ema, optimizer),
            checkpoint_id=tmp / DCP_DIR,
            no_dist=not D.is_initialized(),
        )
    ema_full = full_state_dict(ema)  # a collective when sharded
    error = None
    if D.is_main():
        try:
            atomic_save_safetensors(
                tmp / "ema.safetensors", ema_full, checkpoint_metadata(config, step, stats)
            )
            write_checksums(tmp)  # every rank's shards are written: dcp.save returned on all
            publish_checkpoint(tmp, final)
        except OSError as err:
            shutil.rmtree(tmp, ignore_errors=True)
            error = checkpoint_write_failed(run_dir, final, err)
    error = D.broadcast_object(error)  # every rank stops alike (none waits in a collective)
    if error is not None:
        raise error
    return final


def is_sharded_checkpoint(path: Path) -> bool:
    return (Path(path) / DCP_DIR).is_dir()


def load_sharded(
    path: Path, model: nn.Module, ema: nn.Module, optimizer: torch.optim.Optimizer
) -> None:
    """Strictly restore model, EMA and optimizer from a DCP checkpoint of any world size."""
    state = _dcp_state(model, ema, optimizer)
    with _single_process_ok():
        dcp.load(state, checkpoint_id=Path(path) / DCP_DIR, no_dist=not D.is_initialized())
    set_state_dict(
        model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"]
    )
    set_model_state_dict(ema, state["ema"])


@contextlib.contextmanager
def _single_process_ok() -> Iterator[None]:
    """Silence DCP's warning that it runs without a process group (intended here)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield
