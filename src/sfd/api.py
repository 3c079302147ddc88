"""The Python entry points: load a trained or imported model."""

from __future__ import annotations

from pathlib import Path

import torch

from sfd.model import LightningDiT
from sfd.training.checkpoint import Checkpoint, load_weights, read_checkpoint


def load_checkpoint(
    path: str | Path, device: torch.device | str = "cpu", weights: str = "ema"
) -> tuple[LightningDiT, Checkpoint]:
    """The model (eval mode, strictly loaded) and the checkpoint's config, step and stats.

    ``path`` is a checkpoint directory or a run directory (its newest checkpoint is used);
    ``weights`` is ``"ema"`` (default, what sampling uses) or ``"model"`` (raw weights).
    """
    if weights not in ("ema", "model"):
        raise ValueError(f"weights must be 'ema' or 'model'; got {weights!r}")
    ckpt = read_checkpoint(Path(path))
    model = LightningDiT(ckpt.config.model, ckpt.config.latent)
    file = ckpt.path / f"{weights}.safetensors"
    if not file.exists():
        raise FileNotFoundError(
            f"{file} does not exist (imported release checkpoints hold EMA weights only)"
        )
    load_weights(model, file)
    return model.to(device).eval(), ckpt


def load_model(path: str | Path, device: torch.device | str = "cpu") -> LightningDiT:
    """The EMA model of a checkpoint or run directory, in eval mode.

    Its run config and latent statistics are attached as ``model.run_config`` and
    ``model.latent_stats``.
    """
    model, ckpt = load_checkpoint(path, device)
    model.run_config = ckpt.config
    model.latent_stats = ckpt.stats
    return model
