"""A training run's checkpoints, written and restored in one place, full-state or sharded.

:func:`save_run_checkpoint` and :func:`load_run_checkpoint` are the only writer and reader of
what a run resumes from: model, EMA, optimizer and the loop's own state (its loss window and
counts, so a resumed run decides as the uninterrupted one). Two layouts of the one format of
:mod:`sfd.training.checkpoint`:

- **full-state** (one process, DDP): ``model``, ``ema`` and ``optimizer.safetensors``, written
  by rank 0; the loop's state is JSON in the optimizer file's metadata (``trainer_state``).
- **sharded** (FSDP2, ``train.parallel=fsdp``): model, EMA and optimizer in ``dcp/`` through
  ``torch.distributed.checkpoint``, every rank writing its shards; keys are parameter names and
  shards carry global offsets, so a checkpoint loads on any world size (or with no process
  group). Beside it, the consolidated ``ema.safetensors`` (so :func:`sfd.load_model` and
  sampling read it as any other) and the loop's state in ``trainer_state.json``.

Every rank calls both functions; a failed write stops every rank alike (none waits in a
collective). A sharded checkpoint resumes under either mode; a full-state one is refused under
FSDP, by name.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)

from sfd import distributed as D
from sfd.config import Config
from sfd.data.tensor_files import atomic_save_safetensors, atomic_write_json, safetensors_metadata
from sfd.errors import WriteError
from sfd.latents.composite import LatentStats
from sfd.training.checkpoint import (
    checkpoint_dir,
    checkpoint_metadata,
    checkpoint_write_failed,
    load_optimizer_tensors,
    load_weights,
    prune_checkpoints,
    publish_checkpoint,
    save_checkpoint,
    verify_checkpoint,
    write_checksums,
)
from sfd.training.parallel import full_state_dict

DCP_DIR = "dcp"
TRAINER_STATE = "trainer_state.json"


def is_sharded_checkpoint(path: Path) -> bool:
    return (Path(path) / DCP_DIR).is_dir()


def save_run_checkpoint(
    run_dir: Path,
    *,
    step: int,
    config: Config,
    stats: LatentStats,
    model: nn.Module,
    ema: nn.Module,
    optimizer: torch.optim.Optimizer,
    trainer_state: dict,
    sharded: bool,
    keep_last: int = 0,
) -> None:
    """Write the checkpoint of ``step`` (every rank calls), then keep the newest ``keep_last``
    (0: all)."""
    parts = dict(step=step, config=config, stats=stats, model=model, ema=ema, optimizer=optimizer)
    if sharded:
        _save_sharded(run_dir, **parts, trainer_state=trainer_state)
    else:
        error = None
        if D.is_main():
            try:
                save_checkpoint(run_dir, **parts, trainer_state=trainer_state)
            except WriteError as err:
                error = err
        error = D.broadcast_object(error)  # every rank stops alike on a failed write
        if error is not None:
            raise error
    if D.is_main():
        prune_checkpoints(run_dir, keep_last)
    D.barrier()


def load_run_checkpoint(
    path: Path,
    model: nn.Module,
    ema: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    sharded: bool,
) -> dict:
    """Strictly restore model, EMA and optimizer from the checkpoint directory ``path`` (every
    file checked against its checksums first); the loop's state it stored (``{}`` if none).
    ``sharded``: this run shards its parameters (FSDP), so a full-state checkpoint is refused."""
    path = Path(path)
    verify_checkpoint(path)  # every file, before anything is loaded
    if is_sharded_checkpoint(path):
        _load_sharded(path, model, ema, optimizer)
        state_file = path / TRAINER_STATE
        return json.loads(state_file.read_text()) if state_file.exists() else {}
    if sharded:
        raise ValueError(
            f"{path} is a full-state (DDP) checkpoint; resume it with train.parallel=ddp"
        )
    load_weights(model, path / "model.safetensors", verify=False)
    load_weights(ema, path / "ema.safetensors", verify=False)
    opt = path / "optimizer.safetensors"
    load_optimizer_tensors(optimizer, opt, verify=False)
    return json.loads(safetensors_metadata(opt, "optimizer state").get("trainer_state", "{}"))


def _dcp_state(model: nn.Module, ema: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    model_sd, optim_sd = get_state_dict(model, optimizer)
    return {"model": model_sd, "ema": get_model_state_dict(ema), "optimizer": optim_sd}


def _save_sharded(
    run_dir: Path,
    *,
    step: int,
    config: Config,
    stats: LatentStats,
    model: nn.Module,
    ema: nn.Module,
    optimizer: torch.optim.Optimizer,
    trainer_state: dict,
) -> Path:
    """Every rank writes its shards into one temporary directory (a filesystem all ranks
    share); rank 0 adds the EMA file and the loop's state, and renames the directory into place
    once all ranks are done."""
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
            atomic_write_json(tmp / TRAINER_STATE, trainer_state)
            write_checksums(tmp)  # every rank's shards are written: dcp.save returned on all
            publish_checkpoint(tmp, final)
        except OSError as err:
            shutil.rmtree(tmp, ignore_errors=True)
            error = checkpoint_write_failed(run_dir, final, err)
    error = D.broadcast_object(error)  # every rank stops alike (none waits in a collective)
    if error is not None:
        raise error
    return final


def _load_sharded(
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
