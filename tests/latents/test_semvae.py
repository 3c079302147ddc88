"""Semantic VAE: shapes, the per-token cosine and KL closed forms, size, save/load."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from sfd.latents.semvae import (
    SemanticVAE,
    SemVAEConfig,
    gaussian_kl_per_sample,
    load_semvae,
    num_parameters,
    save_semvae,
    semvae_loss,
    sincos_pos_embed,
)

TINY = SemVAEConfig(in_dim=12, latent_channels=3, width=16, depth=1, num_heads=2, grid=4)


def test_shapes_and_determinism():
    torch.manual_seed(0)
    model = SemanticVAE(TINY).eval()
    features = torch.randn(2, 12, 4, 4)
    mean, logvar = model.encode(features)
    assert mean.shape == logvar.shape == (2, 3, 4, 4)
    recon, mean2, _ = model(features)
    assert recon.shape == features.shape and torch.equal(mean, mean2)
    assert torch.equal(model(features)[0], model.decode(mean))  # noise=None: the mean
    noisy = model(features, torch.randn(2, 3, 4, 4))[0]
    assert not torch.allclose(noisy, recon)
    _, std = model.posterior(features)
    assert torch.allclose(std, torch.exp(0.5 * logvar))
    with pytest.raises(ValueError, match=r"\(B, 12, h, w\)"):
        model.encode(torch.randn(2, 11, 4, 4))


def test_tokens_are_processed_as_a_set_without_positional_embedding():
    torch.manual_seed(0)
    model = SemanticVAE(TINY).eval()
    features = torch.randn(1, 12, 4, 4)
    shuffled = features.flatten(2)[:, :, torch.randperm(16)]
    perm_out = model(shuffled.view(1, 12, 4, 4))[0].flatten(2)
    out = model(features)[0].flatten(2)
    assert torch.allclose(
        torch.sort(out, dim=2).values, torch.sort(perm_out, dim=2).values, atol=1e-5
    )


def test_per_token_cosine_closed_forms():
    target = torch.randn(2, 8, 3, 3)
    zeros = torch.zeros(2, 3, 3, 3)
    assert semvae_loss(target, target, zeros, zeros)["cos"] == pytest.approx(0.0, abs=1e-6)
    # Orthogonal at every token: one-hot channel 0 against one-hot channel 1.
    a = torch.zeros(2, 8, 3, 3)
    b = torch.zeros(2, 8, 3, 3)
    a[:, 0], b[:, 1] = 1.0, 2.0
    assert semvae_loss(a, b, zeros, zeros)["cos"] == pytest.approx(1.0, abs=1e-6)
    # Rescaling each token by its own positive factor keeps every per-token cosine at 1 (a
    # cosine over the token axis, the release's, would not stay at 1).
    scale = torch.rand(2, 1, 3, 3) + 0.5
    terms = semvae_loss(target * scale, target, zeros, zeros)
    assert terms["cos"] == pytest.approx(0.0, abs=1e-6) and terms["mse"] > 0
    assert terms["mse"] == pytest.approx(((target * scale - target) ** 2).mean().item())


def test_kl_closed_form_and_total():
    mean = torch.full((2, 3, 2, 2), 0.5)
    logvar = torch.full((2, 3, 2, 2), torch.log(torch.tensor(2.0)).item())
    per_element = 0.5 * (0.25 + 2.0 - 1.0 - torch.log(torch.tensor(2.0)))
    expected = per_element * 12
    assert torch.allclose(gaussian_kl_per_sample(mean, logvar), expected.expand(2))
    zero = torch.zeros(1, 3, 2, 2)
    assert gaussian_kl_per_sample(zero, zero).item() == 0.0
    target = torch.randn(2, 5, 2, 2)
    recon = torch.randn(2, 5, 2, 2)
    terms = semvae_loss(recon, target, mean, logvar, kl_weight=1e-7)
    assert torch.allclose(terms["kl"], expected)
    assert torch.allclose(terms["loss"], terms["mse"] + terms["cos"] + 1e-7 * terms["kl"])


def test_release_size_is_about_58m_parameters():
    with torch.device("meta"):
        model = SemanticVAE(SemVAEConfig(in_dim=768))
    assert 57.5e6 < num_parameters(model) < 58.5e6


@pytest.mark.parametrize("pos_embed", ["learned", "sincos"])
def test_positional_embeddings(pos_embed):
    config = SemVAEConfig(**{**TINY.__dict__, "pos_embed": pos_embed})
    model = SemanticVAE(config)
    assert model(torch.randn(1, 12, 4, 4))[0].shape == (1, 12, 4, 4)
    with pytest.raises(ValueError, match="positional embedding has 16 tokens"):
        model(torch.randn(1, 12, 3, 3))


def test_sincos_embedding_layout():
    table = sincos_pos_embed(8, 3)  # (9 tokens, 8): [sin(col), cos(col), sin(row), cos(row)]
    assert table.shape == (9, 8)
    assert torch.equal(table[0], torch.tensor([0.0, 0, 1, 1, 0, 0, 1, 1]))
    assert torch.allclose(table[1, 0], torch.sin(torch.tensor(1.0)))  # token 1: column 1
    assert torch.allclose(table[3, 4], torch.sin(torch.tensor(1.0)))  # token 3: row 1


def test_config_errors():
    with pytest.raises(ValueError, match="multiple of semvae.num_heads"):
        SemVAEConfig(width=10, num_heads=3)
    with pytest.raises(ValueError, match="pos_embed"):
        SemVAEConfig(pos_embed="rope")
    with pytest.raises(ValueError, match="depth"):
        SemVAEConfig(depth=0)


def test_save_and_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = SemanticVAE(TINY).eval()
    save_semvae(model, tmp_path, {"note": "test"})
    loaded = load_semvae(tmp_path)
    features = torch.randn(2, 12, 4, 4)
    assert loaded.config == TINY and not loaded.training
    assert torch.equal(loaded(features)[0], model(features)[0])
    with pytest.raises(FileNotFoundError, match="sfd train-semvae"):
        load_semvae(tmp_path / "missing")


def _layer_norm_eps(model: SemanticVAE) -> set[float]:
    return {m.eps for m in model.modules() if isinstance(m, nn.LayerNorm)}


def test_layer_norm_eps_defaults_to_the_releases():
    # Fixture README ("Blocks"): "LayerNorm eps is 1e-5" (PyTorch's default, kept by the release).
    assert SemVAEConfig().layer_norm_eps == 1e-5
    assert _layer_norm_eps(SemanticVAE(TINY)) == {1e-5}
    other = SemanticVAE(SemVAEConfig(**{**TINY.__dict__, "layer_norm_eps": 1e-6}))
    assert _layer_norm_eps(other) == {1e-6}
    with pytest.raises(ValueError, match="layer_norm_eps"):
        SemVAEConfig(layer_norm_eps=0.0)


def test_a_directory_saved_without_layer_norm_eps_loads_with_the_old_eps(tmp_path):
    """Directories written before the key existed were trained with eps 1e-6: they load so."""
    torch.manual_seed(0)
    old = SemanticVAE(SemVAEConfig(**{**TINY.__dict__, "layer_norm_eps": 1e-6})).eval()
    save_semvae(old, tmp_path)
    meta_path = tmp_path / "semvae.json"
    meta = json.loads(meta_path.read_text())
    del meta["config"]["layer_norm_eps"]  # as the earlier code wrote it
    meta_path.write_text(json.dumps(meta))
    loaded = load_semvae(tmp_path)
    assert loaded.config.layer_norm_eps == 1e-6 and _layer_norm_eps(loaded) == {1e-6}
    features = torch.randn(2, 12, 4, 4)
    assert torch.equal(loaded(features)[0], old(features)[0])
