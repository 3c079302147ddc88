"""Tiny components of the ecosystem tests: a random texture VAE, perturbed weights."""

from __future__ import annotations

import dataclasses

import torch
from diffusers import AutoencoderKL

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
