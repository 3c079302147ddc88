"""Small synthetic data sets in the library's formats, for the crash campaign and the tests: a
latent shard set whose latents depend on the label (learnable), a feature set on a 3-d
subspace (compressible to C_s = 3), and a tiny random pixel autoencoder."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL

from sfd.config import Config
from sfd.data.feature_shards import finalize_feature_set
from sfd.data.latent_shards import finalize_latent_set, write_latent_shard
from sfd.data.shards import write_shard


def write_synthetic_latents(
    directory: Path,
    cfg: Config,
    count: int = 24,
    shard_size: int = 10,
    seed: int = 0,
    repa: bool = True,
) -> Path:
    """A small latent shard set whose latents depend on the label (learnable)."""
    g = torch.Generator().manual_seed(seed)
    lat, n_cls = cfg.latent, cfg.model.num_classes
    protos = torch.randn(n_cls, lat.channels, lat.size, lat.size, generator=g)
    labels = torch.arange(count) % n_cls
    shards = 0
    for start in range(0, count, shard_size):
        y = labels[start : start + shard_size]
        n = y.numel()
        mean = protos[y][:, None].repeat(1, 2, 1, 1, 1) + 0.1 * torch.randn(
            n, 2, lat.channels, lat.size, lat.size, generator=g
        )
        mean[:, 1] = mean[:, 1].flip(-1)
        std = 0.05 + 0.05 * torch.rand(mean.shape, generator=g)
        tensors = {
            "label": y,
            "tex_mean": mean[:, :, : lat.tex_channels],
            "tex_std": std[:, :, : lat.tex_channels],
            "sem_mean": mean[:, :, lat.tex_channels :],
            "sem_std": std[:, :, lat.tex_channels :],
        }
        if repa:
            tensors["repa"] = torch.randn(n, 2, cfg.model.repa_dim, lat.size, lat.size, generator=g)
        write_latent_shard(directory, shards, tensors)
        shards += 1
    finalize_latent_set(directory, n_cls, shards)
    return Path(directory)


def write_feature_set(directory, count=40, shard_size=16, dim=12, grid=4, seed=0):
    """Features on a 3-d subspace (compressible to C_s = 3) plus their mirror as view 1."""
    g = torch.Generator().manual_seed(seed)
    basis = torch.randn(3, dim, generator=g)
    codes = torch.randn(count, grid, grid, 3, generator=g)
    features = (codes @ basis).permute(0, 3, 1, 2)  # (N, C, h, w)
    views = torch.stack([features, features.flip(-1)], dim=1)
    shards = 0
    for start in range(0, count, shard_size):
        rows = slice(start, start + shard_size)
        write_shard(
            directory,
            shards,
            {"features": views[rows].half(), "label": torch.arange(count)[rows] % 3},
        )
        shards += 1
    encoder = {"name": "synthetic", "dim": dim, "grid": grid}
    finalize_feature_set(directory, 3, shards, extra={"extraction": {"encoder": encoder}})
    return views


def tiny_autoencoder(
    image_channels: int = 3,
    widths: tuple[int, ...] = (8, 8, 8),
    latent_channels: int = 4,
    seed: int = 0,
) -> AutoencoderKL:
    """A random diffusers ``AutoencoderKL`` (one block per level, no attention, in eval mode),
    downsampling by ``2 ** (len(widths) - 1)``: the default maps 32 px to 8x8 latents."""
    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=image_channels,
        out_channels=image_channels,
        down_block_types=("DownEncoderBlock2D",) * len(widths),
        up_block_types=("UpDecoderBlock2D",) * len(widths),
        block_out_channels=widths,
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=4,
    ).eval()
