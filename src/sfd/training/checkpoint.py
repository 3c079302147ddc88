"""Checkpoints that describe themselves (config, step and latent statistics in their metadata).

A checkpoint is a directory ``RUN/checkpoints/step-0000100/`` holding

- ``ema.safetensors``: EMA weights (what sampling uses); safetensors metadata carries
  ``format``, the resolved ``config`` (JSON), ``step`` and the latent ``stats`` (JSON);
- ``model.safetensors``: the raw weights (same metadata), absent for imported release weights;
- ``optimizer.safetensors``: AdamW moments; ``param_groups``, steps and the training loop's
  state (``trainer_state``) in the metadata;
- ``dcp/`` and ``trainer_state.json`` (FSDP runs, instead of the model and optimizer files):
  sharded model, EMA and optimizer state written by ``torch.distributed.checkpoint``, which
  loads on any world size, and the loop's state. A training run writes and restores its
  checkpoints, in either layout, through :mod:`sfd.training.run_checkpoint` alone.

and ``checksums.json``: the size and sha256 of every other file, written last (before the
directory is renamed into place) and checked before any of them is loaded (resume, sampling,
export): a damaged file is refused by name. Checkpoints written before checksums existed load
unchecked. The directory is written under a temporary name and renamed into place, so a crash
never leaves a half-written checkpoint that looks finished. Loading is strict. Resume picks the
highest step (never the largest file, as the release does).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from sfd.config import Config
from sfd.data.shards import IntegrityReport, Recorded, check_files
from sfd.data.tensor_files import (
    atomic_save_safetensors,
    atomic_write_json,
    load_safetensors,
    safetensors_metadata,
    sha256_file,
)
from sfd.errors import BadInputError, MismatchError, MissingInputError, one_line, write_failed
from sfd.latents.composite import LatentStats

FORMAT = "sfd-checkpoint/1"
_PREFIX = "step-"
CHECKSUMS = "checksums.json"
CHECKSUMS_FORMAT = "sfd-checksums/1"


@dataclass
class Checkpoint:
    """What a checkpoint directory describes."""

    path: Path
    config: Config
    step: int
    stats: LatentStats


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"{_PREFIX}{step:07d}"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Finished checkpoint directories of a run, oldest first (by step number)."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        if (
            p.is_dir()
            and p.name.startswith(_PREFIX)
            and p.name[len(_PREFIX) :].isdigit()
            and (p / "ema.safetensors").exists()
        ):
            found.append(p)
    return sorted(found, key=lambda p: int(p.name[len(_PREFIX) :]))


def _metadata(config: Config, step: int, stats: LatentStats) -> dict[str, str]:
    return {
        "format": FORMAT,
        "config": config.to_json(),
        "step": str(step),
        "stats": json.dumps(stats.to_dict()),
    }


def checkpoint_metadata(config: Config, step: int, stats: LatentStats) -> dict[str, str]:
    """The safetensors metadata of a checkpoint's weight files (format, config, step, stats)."""
    return _metadata(config, step, stats)


def publish_checkpoint(tmp: Path, final: Path) -> Path:
    """Rename a finished temporary checkpoint directory into place (an old one is moved aside)."""
    if final.exists():
        final.rename(final.with_name(f"{final.name}.replaced-{int(time.time())}"))
    os.replace(tmp, final)
    return final


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], str]:
    """Flatten an optimizer state dict into named tensors + JSON of its param groups."""
    state = optimizer.state_dict()
    tensors = {}
    for idx, slots in state["state"].items():
        for name, value in slots.items():
            tensors[f"state.{idx}.{name}"] = torch.as_tensor(value)
    return tensors, json.dumps(state["param_groups"])


IMPL_KEYS = ("fused", "foreach")


def load_optimizer_tensors(
    optimizer: torch.optim.Optimizer, path: Path, verify: bool = True
) -> None:
    """Strictly restore an optimizer from :func:`optimizer_tensors` output on disk (checked
    against the checkpoint's checksums first unless ``verify`` is false)."""
    if verify:
        _verify_file(path)
    tensors = load_safetensors(path, "optimizer state")
    # The kernel choice (fused / foreach) is this process's, not the stored run's: it may change
    # on resume (``train.fused_adamw``), and the moments are the same tensors either way.
    impl = [{k: g.get(k) for k in IMPL_KEYS} for g in optimizer.param_groups]
    try:
        groups = json.loads(safetensors_metadata(path, "optimizer state")["param_groups"])
        state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (KeyError, ValueError, TypeError) as err:
        raise MismatchError(
            f"optimizer state {path} does not fit this model's optimizer: {one_line(str(err))}"
        ) from None
    for group, keys in zip(optimizer.param_groups, impl, strict=True):
        group.update(keys)


def save_checkpoint(
    run_dir: Path,
    *,
    step: int,
    config: Config,
    stats: LatentStats,
    ema: nn.Module,
    model: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    trainer_state: dict | None = None,
) -> Path:
    """Write a checkpoint directory atomically (temp dir + rename) and return its path.

    An existing directory for the same step is moved aside (``.replaced-<time>``), never deleted.
    """
    final = checkpoint_dir(run_dir, step)
    tmp = final.with_name(f".{final.name}.tmp{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        tmp.mkdir(parents=True)
        meta = _metadata(config, step, stats)
        atomic_save_safetensors(tmp / "ema.safetensors", _unwrap(ema).state_dict(), meta)
        if model is not None:
            atomic_save_safetensors(tmp / "model.safetensors", _unwrap(model).state_dict(), meta)
        if optimizer is not None:
            tensors, groups = optimizer_tensors(optimizer)
            atomic_save_safetensors(
                tmp / "optimizer.safetensors",
                tensors,
                {
                    "format": FORMAT,
                    "param_groups": groups,
                    "step": str(step),
                    "trainer_state": json.dumps(trainer_state or {}),
                },
            )
        write_checksums(tmp)
    except BaseException as err:  # also a signal turned into an exception: no temp dir left
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, OSError):
            raise checkpoint_write_failed(run_dir, final, err) from err
        raise
    if final.exists():
        final.rename(final.with_name(f"{final.name}.replaced-{int(time.time())}"))
    os.replace(tmp, final)
    return final


def checkpoint_write_failed(run_dir: Path, final: Path, err: OSError) -> OSError:
    """The one line for a checkpoint that could not be written: why, and what is intact."""
    before = [p.name for p in list_checkpoints(run_dir)]
    kept = f"the last checkpoint {before[-1]} is intact" if before else "no checkpoint before"
    return write_failed(final, err, f"{kept}; nothing partial was left; a rerun resumes")


def write_checksums(directory: Path) -> None:
    """``directory/checksums.json``: the size and sha256 of every other file under it."""
    directory = Path(directory)
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.name != CHECKSUMS)
    table = {
        p.relative_to(directory).as_posix(): {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
        for p in files
    }
    atomic_write_json(directory / CHECKSUMS, {"format": CHECKSUMS_FORMAT, "files": table})


def recorded_files(directory: Path) -> list[Recorded] | None:
    """The files ``checksums.json`` records (``None`` for a checkpoint written without it)."""
    path = Path(directory) / CHECKSUMS
    if not path.exists():
        return None
    try:
        table = json.loads(path.read_text())["files"]
        return [
            Recorded(Path(directory) / name, int(rec["bytes"]), str(rec["sha256"]))
            for name, rec in table.items()
            if Path(name).parts and ".." not in Path(name).parts and not Path(name).is_absolute()
        ]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as err:
        raise BadInputError(f"{path} is not a readable checksum table: {err}") from None


def verify_checkpoint(
    directory: Path, names: tuple[str, ...] | None = None, digests: bool = True
) -> IntegrityReport:
    """Check a checkpoint's files (or only ``names``) against ``checksums.json`` (sizes only
    unless ``digests``); a damaged file is a :class:`BadInputError` naming it, both digests (or
    sizes) and what to do."""
    directory = Path(directory)
    recorded = recorded_files(directory)
    if recorded is None:
        return IntegrityReport()
    if names is not None:
        recorded = [r for r in recorded if r.path.relative_to(directory).as_posix() in names]
    if not digests:
        recorded = [Recorded(r.path, r.bytes, None) for r in recorded]
    report = check_files(recorded)
    if report.problems:
        hint = damaged_checkpoint_hint(directory)
        raise BadInputError(f"{report.problems[0]}; nothing was loaded from it: {hint}")
    return report


def damaged_checkpoint_hint(directory: Path) -> str:
    """What to do about a damaged checkpoint: fall back on the one before, or restore it."""
    directory = Path(directory)
    older = [p for p in list_checkpoints(directory.parent.parent) if p.name < directory.name]
    before = f"then {older[-1].name} is used" if older else "no earlier checkpoint"
    return f"restore {directory.name} from a copy, or move it out of {directory.parent} ({before})"


def _verify_file(path: Path) -> None:
    """Check one file of a checkpoint against its ``checksums.json`` (when it has one)."""
    verify_checkpoint(Path(path).parent, (Path(path).name,))


def prune_checkpoints(run_dir: Path, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` checkpoints (0 keeps everything)."""
    if keep_last <= 0:
        return
    for old in list_checkpoints(run_dir)[:-keep_last]:
        shutil.rmtree(old)


def _unwrap(module: nn.Module) -> nn.Module:
    """The plain module inside DDP / torch.compile wrappers."""
    while True:
        if hasattr(module, "module") and isinstance(module.module, nn.Module):
            module = module.module
        elif hasattr(module, "_orig_mod"):
            module = module._orig_mod
        else:
            return module


def read_checkpoint(path: Path) -> Checkpoint:
    """Read the metadata of a checkpoint directory (or a run directory: its newest checkpoint)."""
    path = resolve_checkpoint(path)
    verify_checkpoint(path, digests=False)  # a truncated file, by name (digests: on load)
    meta = safetensors_metadata(path / "ema.safetensors", "checkpoint weights")
    if meta.get("format") != FORMAT:
        raise BadInputError(
            f"{path / 'ema.safetensors'} is not an sfd checkpoint (format "
            f"{meta.get('format')!r}, expected {FORMAT!r}); import release "
            f"weights with `sfd import-upstream`"
        )
    try:
        config = Config.from_dict(json.loads(meta["config"]))
        stats = LatentStats.from_dict(json.loads(meta["stats"]))
        step = int(meta["step"])
    except KeyError as err:
        raise BadInputError(f"checkpoint {path} lacks its {err} metadata") from None
    except (ValueError, TypeError) as err:  # ConfigError included: a config we cannot read
        raise BadInputError(
            f"checkpoint {path} holds a config this version of sfd cannot read: "
            f"{one_line(str(err))}"
        ) from None
    return Checkpoint(path, config, step, stats)


def resolve_checkpoint(path: Path) -> Path:
    """A checkpoint directory from itself or from a run directory (its newest checkpoint)."""
    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"checkpoint or run directory {path} does not exist")
    if (path / "ema.safetensors").exists():
        return path
    found = list_checkpoints(path)
    if not found:
        raise MissingInputError(
            f"{path} holds no checkpoint (expected ema.safetensors or "
            f"checkpoints/step-*/ema.safetensors)"
        )
    return found[-1]


def load_weights(module: nn.Module, path: Path, verify: bool = True) -> None:
    """Strictly load a safetensors state dict into ``module``, with a clear error on mismatch;
    the file is checked against its checkpoint's checksums first unless ``verify`` is false."""
    if verify:
        _verify_file(path)
    state = load_safetensors(path, "checkpoint weights")
    missing, unexpected = _diff_keys(module.state_dict(), state)
    if missing or unexpected:
        raise MismatchError(
            f"{path} does not fit the model: missing keys {missing[:5]}"
            f"{'...' if len(missing) > 5 else ''}, unexpected keys {unexpected[:5]}"
            f"{'...' if len(unexpected) > 5 else ''}"
        )
    for key, value in module.state_dict().items():
        if value.shape != state[key].shape:
            raise MismatchError(
                f"{path}: tensor {key!r} has shape {tuple(state[key].shape)}, the "
                f"model expects {tuple(value.shape)}"
            )
    module.load_state_dict(state, strict=True)


def _diff_keys(expected: dict, got: dict) -> tuple[list[str], list[str]]:
    return sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
