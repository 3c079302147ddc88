"""SemVAE and texture-VAE training resume mid-run bit for bit (OUT/.train_state)."""

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from sfd.config import SemVAETrainConfig, TextureVAETrainConfig
from sfd.data.images import ImageFolder
from sfd.errors import MismatchError
from sfd.latents.semvae import SemVAEConfig
from sfd.training.fit import TrainState
from sfd.training.semvae_fit import train_semvae
from sfd.training.texture_vae import train_texture_vae
from tests.helpers import write_feature_set


def _killed_at(monkeypatch, step):
    """Make TrainState.save raise (like a kill) right after writing the state of ``step``."""
    real = TrainState.save

    def save(self, s, *args, **kw):
        real(self, s, *args, **kw)
        if s == step:
            raise KeyboardInterrupt

    monkeypatch.setattr(TrainState, "save", save)


def _equal(a, b):
    x, y = load_file(str(a)), load_file(str(b))
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def test_semvae_resume_is_exact(tmp_path, monkeypatch):
    write_feature_set(tmp_path / "f", count=32, shard_size=8)
    model = SemVAEConfig(latent_channels=2, width=16, depth=1, num_heads=2)
    cfg = SemVAETrainConfig(total_steps=9, batch_size=8, warmup_steps=2, ckpt_every=3)
    train_semvae(tmp_path / "f", tmp_path / "straight", model, cfg)
    with monkeypatch.context() as m:
        _killed_at(m, 6)
        with pytest.raises(KeyboardInterrupt):
            train_semvae(tmp_path / "f", tmp_path / "resumed", model, cfg)
    assert (tmp_path / "resumed" / ".train_state" / "state.json").exists()
    train_semvae(tmp_path / "f", tmp_path / "resumed", model, cfg)
    assert _equal(tmp_path / "straight/semvae.safetensors", tmp_path / "resumed/semvae.safetensors")
    assert not (tmp_path / "resumed" / ".train_state").exists()


def test_texture_vae_resume_is_exact_and_refuses_other_settings(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    (tmp_path / "img" / "a").mkdir(parents=True)
    for i in range(12):
        arr = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
        Image.fromarray(arr).save(tmp_path / "img" / "a" / f"{i}.png")
    data = ImageFolder(tmp_path / "img", 16)
    kw = dict(block_out_channels=(8,), latent_channels=4, norm_num_groups=4, batch_size=5)
    cfg = TextureVAETrainConfig(**kw, total_steps=7, warmup_steps=2, ckpt_every=3)
    train_texture_vae(data, tmp_path / "straight", cfg)
    with monkeypatch.context() as m:
        _killed_at(m, 6)
        with pytest.raises(KeyboardInterrupt):
            train_texture_vae(data, tmp_path / "resumed", cfg)
    other = TextureVAETrainConfig(**kw, total_steps=7, warmup_steps=2, lr=1e-2)
    with pytest.raises(MismatchError, match="other settings \\(lr\\)"):
        train_texture_vae(data, tmp_path / "resumed", other)
    train_texture_vae(data, tmp_path / "resumed", cfg)
    name = "diffusion_pytorch_model.safetensors"
    assert _equal(tmp_path / "straight" / name, tmp_path / "resumed" / name)
