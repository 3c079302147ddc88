"""A training run's directory and inputs, checked before any step: the stored config a resume
must agree with (:data:`RESUMABLE_CHANGES` may differ), the latent set the config must fit, the
global batch the world size must split, and the run directory's lock."""

from __future__ import annotations

import json
from pathlib import Path

from sfd import distributed as D
from sfd.config import Config
from sfd.data.latent_shards import LatentDataset
from sfd.data.tensor_files import atomic_write_bytes
from sfd.errors import BusyError, MismatchError
from sfd.locks import DirLock
from sfd.training.checkpoint import list_checkpoints

# The one list of settings a resumed run may change (everything else must match what the run
# was started with): how fast, how visibly and how often it saves; loss-spike handling, applied
# from the resume on; and the run's length. Read by check_run_config (the DiT's train section),
# the autoencoders' resume state (sfd.training.fit) and the ablation grid's speed switches.
RESUMABLE_CHANGES = frozenset(
    {
        "log_every",
        "ckpt_every",
        "keep_last",
        "num_workers",
        "device",
        "compile",
        "compile_scope",
        "activation_checkpointing",
        "fused_adamw",
        "spike_factor",
        "spike_window",
        "spike_rollback",
        "max_rollbacks",
        "total_steps",
    }
)
# An autoencoder's learning rate decays over its last steps (``decay_fraction`` of
# ``total_steps``), so its length is part of what it makes; the DiT's learning rate is constant.
AUTOENCODER_RESUMABLE = RESUMABLE_CHANGES - {"total_steps"}


def check_run_config(run_dir: Path, cfg: Config) -> None:
    """Write ``config.json`` for a new run, or check a resumed run's config agrees with ``cfg``."""
    path = Path(run_dir) / "config.json"
    if not path.exists() or not list_checkpoints(run_dir):
        # a config without a checkpoint trained nothing (an attempt that failed): replaced
        atomic_write_bytes(path, cfg.to_json().encode())
        return
    stored = Config.from_dict(json.loads(path.read_text())).to_dict()
    new = cfg.to_dict()
    diffs = [
        f"{sec}.{k}: {stored[sec][k]!r} -> {new[sec][k]!r}"
        for sec in new
        if isinstance(new[sec], dict)
        for k in new[sec]
        if stored[sec][k] != new[sec][k] and not (sec == "train" and k in RESUMABLE_CHANGES)
    ]
    if diffs:
        raise MismatchError(
            f"run directory {run_dir} holds a run with another config ("
            f"{'; '.join(diffs)}); use a new --out or the stored config"
        )
    atomic_write_bytes(path, cfg.to_json().encode())


def check_data(dataset: LatentDataset, cfg: Config) -> None:
    meta, lat = dataset.meta, cfg.latent
    got = (meta["tex_channels"], meta["sem_channels"], meta["size"])
    want = (lat.tex_channels, lat.sem_channels, lat.size)
    if got != want:
        raise MismatchError(
            f"latent data {dataset.directory} has (C_z, C_s, size) = {got}; the "
            f"config expects {want} (set latent.* to match)"
        )
    if dataset.num_classes != cfg.model.num_classes:
        raise MismatchError(
            f"latent data has {dataset.num_classes} classes; model.num_classes is "
            f"{cfg.model.num_classes}"
        )
    if cfg.model.repa_dim and cfg.flow.repa_weight > 0 and meta["repa_dim"] != cfg.model.repa_dim:
        raise MismatchError(
            f"latent data has REPA features of dim {meta['repa_dim']}; "
            f"model.repa_dim is {cfg.model.repa_dim} (set it, or model.repa_dim=0)"
        )


def micro_batch_size(cfg: Config, world: int) -> int:
    """Images per rank and micro-batch; ``ValueError`` unless the global batch splits evenly."""
    per_rank, rem = divmod(cfg.train.global_batch_size, world * cfg.train.grad_accum_steps)
    if rem or per_rank == 0:
        raise ValueError(
            f"train.global_batch_size={cfg.train.global_batch_size} must be a "
            f"multiple of world size x grad_accum_steps = "
            f"{world} x {cfg.train.grad_accum_steps}"
        )
    return per_rank


def validate_run(cfg: Config, data_dir: str | Path, world: int = 1) -> LatentDataset:
    """Check ``cfg`` against the latent set and the world size (nothing is written)."""
    micro_batch_size(cfg, world)
    dataset = LatentDataset(data_dir)
    check_data(dataset, cfg)
    return dataset


CLASS_NAMES = "class_names.json"


def record_class_names(run_dir: Path, data_dir, num_classes: int) -> None:
    """Copy the latent set's class names (when it has them) into the run as ``class_names.json``
    (a JSON list; ``sfd export-diffusers`` and ``sfd app`` read it)."""
    names = json.loads((Path(data_dir) / "meta.json").read_text()).get("class_names")
    if names and len(names) == num_classes:
        text = json.dumps([str(n) for n in names], indent=1) + "\n"
        atomic_write_bytes(Path(run_dir) / CLASS_NAMES, text.encode())


def prepare_run_dir(
    run_dir: Path, cfg: Config, resume: bool, data_dir, lock: DirLock
) -> Exception | None:
    """Check the config against the data, then create, lock and check the run directory
    (rank 0); the error, if any. A config the data refuses writes nothing."""
    try:
        validate_run(cfg, data_dir, D.world_size())
        run_dir.mkdir(parents=True, exist_ok=True)
        if not lock.acquire():
            raise BusyError(
                f"run directory {run_dir} is in use by {lock.owner()} (lock {lock}); wait for "
                f"it to finish or stop it (a lock left by a killed process is taken over)"
            )
    except (ValueError, OSError, BusyError) as err:  # the lock is not ours: leave it
        return err
    try:
        if not resume and list_checkpoints(run_dir):
            raise ValueError(f"{run_dir} already holds checkpoints; resume it or use a new --out")
        check_run_config(run_dir, cfg)
        record_class_names(run_dir, data_dir, cfg.model.num_classes)
    except (ValueError, OSError) as err:
        lock.release()
        return err
    return None
