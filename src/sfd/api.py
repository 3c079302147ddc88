"""The Python entry points: load a trained or imported model, with what its checkpoint says
about it (config, latent statistics, step, the pixel decoder it names)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from sfd.config import Config
from sfd.errors import UsageError
from sfd.latents.composite import LatentStats
from sfd.model import LightningDiT
from sfd.training.checkpoint import Checkpoint, load_weights, read_checkpoint


@dataclass(frozen=True)
class LoadedModel:
    """What :func:`load_model` returns: the EMA model (eval mode) and its checkpoint's record."""

    model: LightningDiT
    config: Config  # the run's config (sampling settings included)
    stats: LatentStats  # the latent normalisation the model was trained in
    step: int
    checkpoint: Path  # the checkpoint directory

    @property
    def run_dir(self) -> Path:
        return self.checkpoint.parent.parent

    def decoder_path(self) -> Path:
        """The pixel decoder the run's config names (:func:`resolve_decoder`)."""
        return resolve_decoder(self.config, self.run_dir)


def resolve_decoder(cfg: Config, run_dir: str | Path) -> Path:
    """The pixel decoder a run's config names (``latent.texture_autoencoder``).

    A relative path stored in a run's config is taken as given if it exists from the current
    directory, else relative to the run directory: a run that stores ``../texture_vae`` works
    from any current directory and after its parent directory is moved.
    """
    path = cfg.latent.texture_autoencoder
    if not path:
        raise UsageError("no decoder: pass --decoder PATH (or --latents-only)")
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    beside = Path(run_dir) / p
    if beside.exists():
        return beside
    raise UsageError(
        f"the run's latent.texture_autoencoder {path!r} exists neither from the current directory "
        f"nor from the run directory {run_dir}; pass --decoder PATH"
    )


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
    model = LightningDiT.from_configs(ckpt.config.model, ckpt.config.latent)
    file = ckpt.path / f"{weights}.safetensors"
    if not file.exists():
        raise FileNotFoundError(
            f"{file} does not exist (imported release checkpoints hold EMA weights only)"
        )
    load_weights(model, file)
    return model.to(device).eval(), ckpt


def load_model(path: str | Path, device: torch.device | str = "cpu") -> LoadedModel:
    """The EMA model of a checkpoint or run directory, in eval mode, with its run config,
    latent statistics, step and checkpoint directory (:class:`LoadedModel`)."""
    model, ckpt = load_checkpoint(path, device)
    return LoadedModel(model, ckpt.config, ckpt.stats, ckpt.step, ckpt.path)
