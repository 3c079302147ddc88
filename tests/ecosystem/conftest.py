"""A tiny trained-looking sfd run with its texture VAE, shared by the ecosystem tests."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from ecosystem_helpers import perturbed, sample_settings, tiny_vae

from helpers import tiny_config
from sfd.latents.composite import LatentStats
from sfd.model import LightningDiT
from sfd.training.checkpoint import save_checkpoint


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """``root/run`` (one checkpoint; its config names ``../vae``) and ``root/vae``."""
    root = tmp_path_factory.mktemp("tiny_sfd")
    cfg = tiny_config()
    cfg = sample_settings(cfg)
    cfg = dataclasses.replace(
        cfg, latent=dataclasses.replace(cfg.latent, texture_autoencoder="../vae")
    )
    torch.manual_seed(0)
    model = perturbed(LightningDiT(cfg.model, cfg.latent), 1)
    c = cfg.latent.channels
    stats = LatentStats(torch.linspace(-0.3, 0.3, c), torch.linspace(0.5, 1.5, c))
    save_checkpoint(root / "run", step=7, config=cfg, stats=stats, ema=model)
    tiny_vae(cfg.latent.tex_channels).save_pretrained(root / "vae")
    return root
