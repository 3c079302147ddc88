"""The PCA semantic encoder (ReDi baseline): a fit on feature shards, checked against numpy."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sfd.data.feature_shards import FeatureShards, finalize_feature_set
from sfd.data.latent_shards import LatentDataset
from sfd.data.shards import write_shard
from sfd.extract import extract
from sfd.latents.pca import PCAEncoder, fit_pca, load_pca, save_pca

D, GRID, IMAGES, SHARD = 6, 4, 10, 4


def write_feature_set(directory, seed=0, images=IMAGES, dim=D):
    """An ``sfd-features`` set: anisotropic Gaussian features with distinct variances, fp16."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(dim, dim, generator=g) * torch.linspace(3.0, 0.2, dim)
    shards = 0
    for lo in range(0, images, SHARD):
        n = min(SHARD, images - lo)
        codes = torch.randn(n, 2, GRID, GRID, dim, generator=g)
        features = (codes @ mix.T + torch.arange(dim)).movedim(-1, 2)  # (n, 2, D, h, w)
        write_shard(directory, shards, {"features": features.half(), "label": torch.zeros(n)})
        shards += 1
    finalize_feature_set(directory, 1, shards)
    return directory


def samples(directory, max_images=None):
    """The stored features as (n, D) float64 numpy samples: every image, view, position."""
    array = np.concatenate([np.asarray(s["features"]) for s in FeatureShards(directory).shards])
    array = array[:max_images].astype(np.float64)
    return np.moveaxis(array, 2, -1).reshape(-1, array.shape[2])


@pytest.fixture(scope="module")
def features(tmp_path_factory):
    return write_feature_set(tmp_path_factory.mktemp("features"))


def test_components_are_the_top_eigenvectors_of_the_sample_covariance(features):
    pca = fit_pca(features, 3)
    x = samples(features)
    cov = np.cov(x, rowvar=False)  # unbiased, computed independently
    values, vectors = np.linalg.eigh(cov)
    p = pca.components.numpy()
    np.testing.assert_allclose(p @ p.T, np.eye(3), atol=1e-10)
    ev = pca.explained_variance.numpy()
    assert np.all(np.diff(ev) < 0)
    np.testing.assert_allclose(ev, values[::-1][:3], rtol=1e-9)
    top = vectors[:, ::-1][:, :3]
    np.testing.assert_allclose(p.T @ p, top @ top.T, atol=1e-8)  # same subspace, sign-free
    np.testing.assert_allclose(pca.mean.numpy(), x.mean(0), atol=1e-10)
    np.testing.assert_allclose(float(pca.total_variance), np.trace(cov), rtol=1e-10)
    ratio = pca.explained_variance_ratio
    assert bool((ratio > 0).all()) and 0 < float(ratio.sum()) <= 1
    assert pca.num_samples == IMAGES * 2 * GRID * GRID
    assert np.all(p[np.arange(3), np.abs(p).argmax(1)] > 0)  # the deterministic sign


def test_max_images_fits_the_first_images_only(features):
    pca = fit_pca(features, 2, max_images=5)  # crosses a shard boundary
    values = np.linalg.eigvalsh(np.cov(samples(features, 5), rowvar=False))
    np.testing.assert_allclose(pca.explained_variance.numpy(), values[::-1][:2], rtol=1e-9)
    assert pca.num_samples == 5 * 2 * GRID * GRID


def test_round_trip_is_the_projection_onto_the_span(features):
    pca = fit_pca(features, 3)
    g = torch.Generator().manual_seed(1)
    codes = torch.randn(2, 3, GRID, GRID, dtype=torch.float64, generator=g)
    inside = pca.decode(codes)  # features in mean + span(components)
    torch.testing.assert_close(pca.encode(inside), codes, atol=1e-10, rtol=0)
    torch.testing.assert_close(pca.decode(pca.encode(inside)), inside, atol=1e-10, rtol=0)
    f = torch.randn(2, D, GRID, GRID, dtype=torch.float64, generator=g)
    m, p = pca.mean.view(1, D, 1, 1), pca.components
    projection = m + torch.einsum("cd,ce,behw->bdhw", p, p, f - m)
    torch.testing.assert_close(pca.decode(pca.encode(f)), projection, atol=1e-10, rtol=0)
    mean, std = pca.posterior(f.float())
    assert mean.dtype == torch.float32 and torch.equal(std, torch.zeros_like(mean))
    torch.testing.assert_close(mean, pca.encode(f).float())


def test_all_components_reconstruct_any_feature(features):
    pca = fit_pca(features, D)
    f = torch.randn(3, D, GRID, GRID, dtype=torch.float64)
    torch.testing.assert_close(pca.decode(pca.encode(f)), f, atol=1e-10, rtol=0)


def test_fit_is_deterministic_and_save_load_identical(features, tmp_path):
    a, b = fit_pca(features, 3), fit_pca(features, 3)
    for name, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[name]), name
    save_pca(a, tmp_path / "pca")
    loaded = load_pca(tmp_path / "pca")
    assert loaded.state_dict().keys() == a.state_dict().keys()
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in a.state_dict().items())
    info = json.loads((tmp_path / "pca" / "pca.json").read_text())
    assert (info["format"], info["channels"], info["dim"]) == ("sfd-pca", 3, D)
    assert info["num_samples"] == a.num_samples
    assert info["explained_variance_ratio"] == a.explained_variance_ratio.tolist()
    info["channels"] = 2
    (tmp_path / "pca" / "pca.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="pca.safetensors"):
        load_pca(tmp_path / "pca")


@pytest.mark.parametrize("channels", [0, D + 1])
def test_bad_channel_counts_are_refused(features, channels):
    with pytest.raises(ValueError, match=r"channels must be in \[1, D=6\]"):
        fit_pca(features, channels)


def test_buffers_must_have_consistent_shapes():
    with pytest.raises(ValueError, match="components"):
        PCAEncoder(torch.zeros(4), torch.eye(3), torch.ones(3), 3.0)


class PoolEncoder(torch.nn.Module):
    """A FeatureEncoder stand-in: a fixed 1x1 projection of 2x2-pooled pixels to D channels."""

    name, dim, grid = "pool", D, GRID

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Conv2d(1, D, 1)

    def describe(self):
        return {"name": self.name, "dim": self.dim, "grid": self.grid}

    def features(self, images):
        return self.proj(torch.nn.functional.avg_pool2d(images, 2))


class PoolTexture(torch.nn.Module):
    """A TextureAutoencoder stand-in: 2x2 pooling as the posterior mean, std 0.1."""

    downsample = 2

    def describe(self):
        return {"name": "pool"}

    def encode(self, images):
        mean = torch.nn.functional.avg_pool2d(images, 2)
        return mean, torch.full_like(mean, 0.1)


def test_extract_takes_a_pca_encoder_for_the_semvae(features, tmp_path):
    torch.manual_seed(0)
    pca, encoder = fit_pca(features, 2), PoolEncoder().eval()
    images = torch.rand(3, 1, 2 * GRID, 2 * GRID) * 2 - 1
    data = [(images[i], i % 2) for i in range(3)]
    extract(data, encoder, PoolTexture(), pca, tmp_path, shard_size=2, num_classes=2)
    got = LatentDataset(tmp_path).gather(np.arange(3), np.zeros(3))
    with torch.no_grad():
        want = pca.encode(encoder.features(images))
    torch.testing.assert_close(got["sem_mean"], want.float(), atol=1e-5, rtol=1e-5)
    assert torch.equal(got["sem_std"], torch.zeros_like(got["sem_std"]))
