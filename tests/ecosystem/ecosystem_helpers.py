"""Tiny components of the ecosystem tests: a random texture VAE, perturbed weights, and a tiny
trained-looking sfd run (fixture ``tiny_run``: import ``tiny_run_fixture`` into a test module)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from click.testing import CliRunner
from diffusers import AutoencoderKL
from safetensors.torch import load_file

from sfd.cli import main
from sfd.latents.composite import LatentStats
from sfd.model import LightningDiT
from sfd.tools.synthetic import tiny_autoencoder
from sfd.training.checkpoint import save_checkpoint
from tests.helpers import FIXTURES, tiny_config

NUM_CLASSES = 10


def tiny_vae(latent_channels: int, image_channels: int = 3) -> AutoencoderKL:
    """A random f4 AutoencoderKL: (B, latent_channels, 8, 8) -> (B, image_channels, 32, 32)."""
    return tiny_autoencoder(image_channels, latent_channels=latent_channels)


def perturbed(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Weights moved off the adaLN-zero init, so outputs depend on inputs, labels and times."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model.eval()


def sample_settings(cfg, **changes):
    sample = dataclasses.replace(
        cfg.sample,
        method="heun",
        num_steps=3,
        compute_batch=4,
        cfg_scale_tex=2.0,
        cfg_scale_sem=1.5,
        **changes,
    )
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


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def release_stats(path, channels: int, offset: float) -> None:
    mean = torch.linspace(-0.5, 0.5, channels).view(1, channels, 1, 1) + offset
    std = torch.linspace(0.5, 1.5, channels).view(1, channels, 1, 1)
    torch.save({"mean": mean, "std": std}, path)


def import_release(root):
    """``root/main`` and ``root/guide``: the release fixture weights imported with
    ``sfd import-upstream`` (as tests/test_upstream_release.py builds the release folder), and
    ``root/vae``, a random decoder of the right latent channels (the release has none)."""
    meta = json.loads((FIXTURES / "upstream_config.json").read_text())
    mk = meta["model_kwargs"]
    guide_json = root / "guide_config.json"
    guide_json.write_text(
        json.dumps(
            {
                "model_kwargs": meta["guide_model_kwargs"],
                "create_transport_kwargs": meta["create_transport_kwargs"],
            }
        )
    )
    sem, tex = mk["semantic_chans"], mk["in_channels"] - mk["semantic_chans"]
    release_stats(root / "latents_stats.pt", tex, 0.2)
    release_stats(root / "latents_sv_stats.pt", sem, -0.3)
    stats = ["--latent-stats", root / "latents_stats.pt", "--latent-stats"]
    stats += [root / "latents_sv_stats.pt"]
    for name, weights, config in (
        ("main", "state_dict", FIXTURES / "upstream_config.json"),
        ("guide", "guide_state_dict", guide_json),
    ):
        sd = load_file(str(FIXTURES / f"{weights}.safetensors"))
        torch.save({"model": {k: v + 0.05 for k, v in sd.items()}, "ema": sd}, root / f"{name}.pt")
        res = cli(
            "import-upstream",
            root / f"{name}.pt",
            "--upstream-config",
            config,
            *stats,
            "--out",
            root / name,
        )
        assert res.exit_code == 0, res.output
    tiny_vae(tex).save_pretrained(root / "vae")
    return root
