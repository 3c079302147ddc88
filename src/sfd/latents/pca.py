"""A PCA semantic encoder: the ReDi baseline for the semantic latent (docs/METHOD.md §2.2,
ablation).

ReDi (Kouzelis et al. 2025, "Boosting generative image modeling via joint image-feature
synthesis") builds its semantic channels by PCA of the frozen-encoder features; SFD's ablation
compares it with the SemVAE (FID 4.06 vs 3.03). Every spatial position of every stored view is
one D-dim sample. :func:`fit_pca` streams an ``sfd-features`` set (:mod:`sfd.extract`) shard by
shard, accumulating the sum and the sum of outer products in float64 (shifted by the first
chunk's mean against cancellation), and eigendecomposes the unbiased sample covariance
``S = sum (x - m)(x - m)^T / (n - 1)`` with ``torch.linalg.eigh``. The top C eigenvectors, by
decreasing eigenvalue, are the components; each is signed so that its largest-magnitude entry is
positive, so a fit is deterministic.

``encode(f) = P (f - m)`` per position and ``decode(s) = m + P^T s``: decoding an encoding is the
orthogonal projection onto ``m + span(P)``, exact for features in it (and for any feature when
C = D). :meth:`PCAEncoder.posterior` returns ``(codes, zeros)``, the posterior interface that
:func:`sfd.extract.extract` calls on a SemVAE, so a PCA encoder can stand in for one there.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

from sfd.data.feature_shards import FeatureShards
from sfd.data.tensor_files import atomic_save_safetensors, atomic_write_json

FORMAT = "sfd-pca"
VERSION = 1
WEIGHTS_FILE = "pca.safetensors"
CONFIG_FILE = "pca.json"
_CHUNK_ELEMENTS = 1 << 24  # feature values read per step while fitting (64 MiB of float32)


@dataclass(frozen=True)
class PCAConfig:
    """What a PCA encoder maps: ``in_dim`` feature channels to ``latent_channels`` codes (the
    fields :func:`sfd.extract.extract` reads from a SemVAE's config)."""

    in_dim: int
    latent_channels: int
    method: str = "pca"


class PCAEncoder(nn.Module):
    """Features (B, D, h, w) <-> PCA codes (B, C, h, w); see the module docstring.

    Buffers (float64): ``mean`` (D,), ``components`` (C, D) with orthonormal rows,
    ``explained_variance`` (C,) in decreasing order, ``total_variance`` () = trace of the
    sample covariance. ``num_samples`` is the number of D-dim samples the fit saw.
    """

    def __init__(
        self,
        mean: torch.Tensor,
        components: torch.Tensor,
        explained_variance: torch.Tensor,
        total_variance: torch.Tensor | float,
        num_samples: int = 0,
    ) -> None:
        super().__init__()
        total_variance = torch.as_tensor(total_variance, dtype=torch.float64)
        c, d = components.shape if components.ndim == 2 else (-1, -1)
        if (
            mean.shape != (d,)
            or explained_variance.shape != (c,)
            or total_variance.ndim != 0
            or c < 1
        ):
            raise ValueError(
                f"PCA buffers must be mean (D,), components (C, D), explained_variance (C,) and "
                f"a scalar total_variance; got {tuple(mean.shape)}, {tuple(components.shape)}, "
                f"{tuple(explained_variance.shape)}, {tuple(total_variance.shape)}"
            )
        self.register_buffer("mean", mean.double().clone())
        self.register_buffer("components", components.double().clone())
        self.register_buffer("explained_variance", explained_variance.double().clone())
        self.register_buffer("total_variance", total_variance.clone())
        self.num_samples = int(num_samples)
        self.directory: str | None = None  # where it was saved or loaded (provenance)

    @property
    def config(self) -> PCAConfig:
        return PCAConfig(in_dim=self.dim, latent_channels=self.channels)

    @property
    def dim(self) -> int:
        return int(self.components.shape[1])

    @property
    def channels(self) -> int:
        return int(self.components.shape[0])

    @property
    def explained_variance_ratio(self) -> torch.Tensor:
        """(C,) share of the total variance along each component."""
        return self.explained_variance / self.total_variance

    def _as(self, buffer: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``buffer`` on x's device in x's compute dtype (at least float32)."""
        return buffer.to(x.device, torch.promote_types(x.dtype, torch.float32))

    def _check(self, x: torch.Tensor, channels: int, name: str) -> None:
        if x.ndim != 4 or x.shape[1] != channels:
            raise ValueError(f"{name} must be (B, {channels}, h, w); got {tuple(x.shape)}")

    def encode(self, features: torch.Tensor) -> torch.Tensor:
        """Codes ``P (f - m)``: (B, D, h, w) -> (B, C, h, w), in at least float32."""
        self._check(features, self.dim, "features")
        mean, components = self._as(self.mean, features), self._as(self.components, features)
        centred = features.to(mean.dtype) - mean.view(1, -1, 1, 1)
        return torch.einsum("cd,bdhw->bchw", components, centred)

    def posterior(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(codes, zeros)``, each (B, C, h, w): the SemVAE posterior interface (std 0)."""
        codes = self.encode(features)
        return codes, torch.zeros_like(codes)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Features ``m + P^T s``: (B, C, h, w) -> (B, D, h, w)."""
        self._check(codes, self.channels, "PCA codes")
        mean, components = self._as(self.mean, codes), self._as(self.components, codes)
        out = torch.einsum("cd,bchw->bdhw", components, codes.to(mean.dtype))
        return out + mean.view(1, -1, 1, 1)


def pca_from_samples(samples: Iterable[torch.Tensor], channels: int) -> PCAEncoder:
    """Fit the top ``channels`` components to a stream of (n_i, D) sample batches."""
    count, shift, total, outer = 0, None, None, None
    for x in samples:
        x = x.double()
        if x.ndim != 2:
            raise ValueError(f"PCA samples must be (n, D); got {tuple(x.shape)}")
        if shift is None:
            _check_channels(channels, x.shape[1])
            shift = x.mean(0)
            total = torch.zeros_like(shift)
            outer = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64)
        x = x - shift
        count += x.shape[0]
        total += x.sum(0)
        outer += x.T @ x
    if count < 2:
        raise ValueError(f"PCA needs at least 2 samples; got {count}")
    centre = total / count
    cov = (outer - count * torch.outer(centre, centre)) / (count - 1)
    cov = 0.5 * (cov + cov.T)
    values, vectors = torch.linalg.eigh(cov)  # ascending
    values = values.flip(0)[:channels].clamp(min=0.0)
    components = vectors.flip(1)[:, :channels].T.contiguous()  # (C, D)
    pivot = components.abs().argmax(dim=1, keepdim=True)
    components = components * torch.sign(components.gather(1, pivot))
    total_variance = torch.diagonal(cov).sum()
    if not total_variance > 0:
        raise ValueError("the features have zero variance; PCA is undefined")
    return PCAEncoder(shift + centre, components, values, total_variance, count)


def _check_channels(channels: int, dim: int) -> None:
    if not 1 <= channels <= dim:
        raise ValueError(f"PCA channels must be in [1, D={dim}]; got {channels}")


def fit_pca(feature_dir: str | Path, channels: int, max_images: int | None = None) -> PCAEncoder:
    """PCA of the features of an ``sfd-features`` set (every view and position a sample),
    over its first ``max_images`` images in shard order (default: all)."""
    features = FeatureShards(feature_dir)
    _check_channels(channels, features.dim)
    if max_images is not None and max_images < 1:
        raise ValueError(f"max_images must be >= 1; got {max_images}")
    return pca_from_samples(_feature_samples(features, max_images), channels)


def _feature_samples(features, max_images: int | None) -> Iterator[torch.Tensor]:
    """(n, D) float64 samples: every (image, view, position) of the first ``max_images``."""
    left = math.inf if max_images is None else max_images
    for shard in features.shards:
        array = shard["features"]  # (N, V, D, h, w) memmap
        per_image = int(np.prod(array.shape[1:]))
        step = max(1, _CHUNK_ELEMENTS // max(per_image, 1))
        for lo in range(0, array.shape[0], step):
            if left <= 0:
                return
            hi = int(min(array.shape[0], lo + step, lo + left))
            left -= hi - lo
            block = torch.from_numpy(np.asarray(array[lo:hi], dtype=np.float64))
            yield block.movedim(2, -1).reshape(-1, block.shape[2])  # (n * V * h * w, D)


def save_pca(encoder: PCAEncoder, out_dir: str | Path) -> Path:
    """Write ``pca.safetensors`` (the buffers) then ``pca.json`` (format, shapes, ratios)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_save_safetensors(
        out_dir / WEIGHTS_FILE,
        {k: v.double() for k, v in encoder.state_dict().items()},
        metadata={"format": FORMAT},
    )
    info = {
        "format": FORMAT,
        "version": VERSION,
        "channels": encoder.channels,
        "dim": encoder.dim,
        "explained_variance_ratio": encoder.explained_variance_ratio.tolist(),
        "num_samples": encoder.num_samples,
    }
    atomic_write_json(out_dir / CONFIG_FILE, info)
    encoder.directory = str(out_dir.resolve())
    return out_dir


def load_pca(out_dir: str | Path, device: str | torch.device = "cpu") -> PCAEncoder:
    """A saved PCA encoder; its shapes are checked against ``pca.json``."""
    out_dir = Path(out_dir)
    info_path, weights_path = out_dir / CONFIG_FILE, out_dir / WEIGHTS_FILE
    if not (info_path.exists() and weights_path.exists()):
        raise FileNotFoundError(
            f"{out_dir} is not a PCA encoder directory (needs {CONFIG_FILE} and {WEIGHTS_FILE})"
        )
    info = json.loads(info_path.read_text())
    if info.get("format") != FORMAT or info.get("version") != VERSION:
        raise ValueError(
            f"{info_path}: expected format {FORMAT} v{VERSION}; got "
            f"{info.get('format')} v{info.get('version')}"
        )
    tensors = load_file(str(weights_path))
    c, d = info["channels"], info["dim"]
    want = {"mean": (d,), "components": (c, d), "explained_variance": (c,), "total_variance": ()}
    got = {k: tuple(v.shape) for k, v in tensors.items()}
    if got != want:
        raise ValueError(f"{weights_path}: tensors {got} do not match {want} from {CONFIG_FILE}")
    encoder = PCAEncoder(**tensors, num_samples=info["num_samples"])
    encoder.directory = str(out_dir.resolve())
    return encoder.to(device).eval()
