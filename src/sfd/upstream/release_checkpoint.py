"""Reading a release checkpoint (state dict, latent statistics) and writing it as an sfd
checkpoint directory (:func:`import_upstream`); the config comes from
:mod:`sfd.upstream.config`."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from sfd.config import SampleConfig
from sfd.data.tensor_files import load_safetensors, load_tensor_file, load_torch_file
from sfd.errors import BadInputError, MismatchError
from sfd.latents.composite import LatentStats
from sfd.model import LightningDiT
from sfd.recipes import describe_sampler
from sfd.training.checkpoint import save_checkpoint
from sfd.upstream.config import read_inference_config, read_upstream_config

log = logging.getLogger("sfd.upstream")


def read_upstream_state_dict(path: str | Path, prefer: str = "ema") -> dict[str, torch.Tensor]:
    """Weights from a release ``.pt`` (``ema``/``model`` entries) or a ``.safetensors`` file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"upstream checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        state = load_safetensors(path, "upstream checkpoint")
    else:
        raw = load_torch_file(path, "upstream checkpoint")
        if not isinstance(raw, dict):
            raise ValueError(f"{path} does not hold a dict of state dicts")
        keys = [k for k in (prefer, "ema", "model") if k in raw]
        state = raw[keys[0]] if keys else raw
        if keys and keys[0] != prefer:
            log.warning("%s has no %r entry; using %r", path, prefer, keys[0])
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BadInputError(f"{path} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v.float() for k, v in state.items()}


StatsPaths = str | Path | Sequence[str | Path] | None


def read_latent_stats(paths: StatsPaths, tex_channels: int, sem_channels: int) -> LatentStats:
    """Latent mean/std from the release's statistics files, else identity (with a warning).

    The release keeps the texture and the semantic statistics apart: ``latents_stats.pt`` (mean
    and std of shape (1, C_z, 1, 1)) and ``latents_sv_stats.pt`` ((1, C_s, 1, 1)). ``paths`` is
    either those two files in that order, or one file for all C_z + C_s channels (``.pt`` read
    with ``weights_only=True``, or ``.safetensors``), each holding tensors ``mean`` and ``std``.
    """
    if paths is None or (not isinstance(paths, str | Path) and len(paths) == 0):
        log.warning(
            "no latent statistics given: using mean 0 / std 1 (decoding will be wrong "
            "unless the latents were already normalised)"
        )
        return LatentStats.identity(tex_channels + sem_channels)
    files = [Path(paths)] if isinstance(paths, str | Path) else [Path(p) for p in paths]
    total = tex_channels + sem_channels
    if len(files) == 1:
        both = f"all {total} channels ({tex_channels} texture + {sem_channels} semantic)"
        parts = [(files[0], total, f"{both}, or give the texture file then the semantic file")]
    elif len(files) == 2 and sem_channels > 0:
        parts = [
            (files[0], tex_channels, f"the {tex_channels} texture channels (first file)"),
            (files[1], sem_channels, f"the {sem_channels} semantic channels (second file)"),
        ]
    else:
        raise ValueError(
            f"give one latent statistics file for all {total} channels, or two (texture, "
            f"then semantic) for a model with semantic channels; got {len(files)}"
        )
    means, stds = [], []
    for path, channels, expected in parts:
        mean, std = _read_stats_file(path)
        if mean.numel() != channels:
            raise MismatchError(
                f"{path} has statistics for {mean.numel()} channels; expected {expected}"
            )
        means.append(mean)
        stds.append(std)
    return LatentStats(torch.cat(means), torch.cat(stds))


def _read_stats_file(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) as flat float32 vectors from one ``{'mean', 'std'}`` file (no pickled code)."""
    if not path.exists():
        raise FileNotFoundError(f"latent statistics file {path} does not exist")
    data = load_tensor_file(path, "latent statistics file")
    try:
        mean, std = data["mean"].reshape(-1).float(), data["std"].reshape(-1).float()
    except (KeyError, TypeError, AttributeError, IndexError):
        raise BadInputError(f"{path} must hold tensors 'mean' and 'std'") from None
    if mean.shape != std.shape:
        raise ValueError(f"{path}: 'mean' has {mean.numel()} values but 'std' has {std.numel()}")
    return mean, std


def import_upstream(
    ckpt: str | Path,
    upstream_config: str | Path,
    out_dir: str | Path,
    latent_stats: StatsPaths = None,
    prefer: str = "ema",
    inference_config: str | Path | None = None,
    cfg_scale: float | None = None,
) -> Path:
    """Write an sfd checkpoint directory from release weights; returns its path.

    ``latent_stats``: the release's ``latents_stats.pt`` then ``latents_sv_stats.pt``, or one
    file for all channels (see :func:`read_latent_stats`); None means identity statistics.
    The checkpoint's sampling settings come from ``inference_config`` (a release inference
    YAML) if given, else from ``upstream_config`` if it is a YAML, else they are sfd's defaults;
    ``cfg_scale`` is the release's ``CFG_SCALE`` (the AutoGuidance scale with a guide).
    """
    own = inference_config is None
    cfg = read_upstream_config(upstream_config, cfg_scale if own else None, sampling=own)
    if not own:
        cfg = dataclasses.replace(
            cfg, sample=read_inference_config(inference_config, cfg, cfg_scale)
        )
    model = LightningDiT.from_configs(cfg.model, cfg.latent)
    state = read_upstream_state_dict(ckpt, prefer)
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise MismatchError(
            f"{ckpt} does not match the config {upstream_config}: missing "
            f"{missing[:5]}, unexpected {unexpected[:5]}"
        )
    for key, value in expected.items():
        if value.shape != state[key].shape:
            raise MismatchError(
                f"{ckpt}: {key} has shape {tuple(state[key].shape)}, the config "
                f"gives {tuple(value.shape)}"
            )
    model.load_state_dict(state, strict=True)
    stats = read_latent_stats(latent_stats, cfg.latent.tex_channels, cfg.latent.sem_channels)
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"output directory {out} is not empty; choose a new --out")
    path = save_checkpoint(out, step=0, config=cfg, stats=stats, ema=model)
    _log_sampling(cfg.sample, inference_config or upstream_config)
    return path


def _log_sampling(sample: SampleConfig, source: str | Path) -> None:
    if Path(source).suffix == ".json":
        log.info(
            "%s holds no sampling settings: the checkpoint gets sfd's defaults (%s); "
            "--inference-config takes a release YAML's",
            source,
            describe_sampler(sample),
        )
    else:
        log.info(
            "sampling settings of %s stored in the checkpoint (sfd sample's default): %s",
            source,
            describe_sampler(sample),
        )
