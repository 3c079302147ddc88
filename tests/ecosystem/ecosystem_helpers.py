"""Tiny components of the ecosystem tests: a random texture VAE, perturbed weights, and a tiny
trained-looking sfd run (fixture ``tiny_run``: import ``tiny_run_fixture`` into a test module;
not a conftest, whose module name would shadow tests/badinput/conftest.py's helpers)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from diffusers import AutoencoderKL

from helpers import tiny_config
from sfd.latents.composite import LatentStats
from sfd.model import LightningDiT
from sfd.training.checkpoint import save_checkpoint

NUM_CLASSES = 10


def tiny_vae(latent_channels: int, image_channels: int = 3) -> AutoencoderKL:
    """A random f4 AutoencoderKL: (B, latent_channels, 8, 8) -> (B, image_channels, 32, 32)."""
    torch.manual_seed(0)
    return AutoencoderKL(
        in_channels=image_channels,
        out_channels=image_channels,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(8, 8, 8),
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=4,
    ).eval()


def perturbed(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Weights moved off the adaLN-zero init, so outputs depend on inputs, labels and times."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model.eval()


def sample_settings(cfg, **changes):
    sample = dataclasses.replace(
        cfg.sample, method="heun", num_steps=3, compute_batch=4, cfg_scale_tex=2.0,
        cfg_scale_sem=1.5, **changes,
    )  # fmt: skip
    return dataclasses.replace(cfg, sample=sample)


@pytest.fixture(scope="session", name="tiny_run")
def tiny_run_fixture(tmp_path_factory):
    """``root/run`` (one checkpoint; its config names ``../vae``) and ``root/vae``."""
    root = tmp_path_factory.mktemp("tiny_sfd")
    cfg = tiny_config()
    cfg = sample_settings(cfg)
    cfg = dataclasses.replace(
        cfg, latent=dataclasses.replace(cfg.latent, texture_autoencoder="../vae")
    )
    torch.manual_seed(0)
    model = perturbed(LightningDiT.from_configs(cfg.model, cfg.latent), 1)
    c = cfg.latent.channels
    stats = LatentStats(torch.linspace(-0.3, 0.3, c), torch.linspace(0.5, 1.5, c))
    save_checkpoint(root / "run", step=7, config=cfg, stats=stats, ema=model)
    tiny_vae(cfg.latent.tex_channels).save_pretrained(root / "vae")
    return root
