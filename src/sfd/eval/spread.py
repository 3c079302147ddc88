"""How much a metric measured on few images would move with other images: a bootstrap over
images (Efron 1979) of the Fréchet distance and of accuracies.

With N images, the Fréchet distance in D-dimensional features (D = 1280 for EfficientNet-Lite0)
is dominated by noise when N is far below D; its bootstrap standard error (resample each set's
images with replacement, recompute) says by how much. For N below ~D each resample costs an
(N x M) SVD, not a (D x D) eigen-decomposition: with centred rows A (N x D) and B (M x D),
``tr (S_A S_B)^(1/2)`` is the sum of the singular values of ``A B^T`` over
``sqrt((N - 1)(M - 1))`` (the non-zero eigenvalues of ``A^T A B^T B`` are those of
``(A B^T)(A B^T)^T``), so :func:`frechet_distance_rows` is exact, not an approximation.
"""

from __future__ import annotations

import numpy as np
import torch

from sfd.eval.sources import open_images

ROUNDS = 100  # bootstrap resamples
MAX_ROWS = 256  # above this many images per set no spread is computed (it costs, and is small)


def frechet_distance_rows(a: torch.Tensor, b: torch.Tensor) -> float:
    """The Fréchet distance between the Gaussian fits (mean, unbiased covariance) of the rows
    of ``a`` (N, D) and ``b`` (M, D), N, M >= 2, computed through the (N, M) cross product."""
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    if a.ndim != 2 or b.ndim != 2 or len(a) < 2 or len(b) < 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"expected (N, D) and (M, D) features, N, M >= 2; got {a.shape} {b.shape}")
    ca, cb = a - a.mean(0), b - b.mean(0)
    na, nb = len(a) - 1, len(b) - 1
    cross = torch.linalg.svdvals(ca @ cb.T).sum() / (na * nb) ** 0.5
    trace = ca.square().sum() / na + cb.square().sum() / nb
    mean = (a.mean(0) - b.mean(0)).square().sum()
    return float((mean + trace - 2 * cross).clamp_min(0))


def fd_spread(a: torch.Tensor, b: torch.Tensor, rounds: int = ROUNDS, seed: int = 0):
    """Bootstrap standard error of the Fréchet distance between rows of ``a`` and ``b`` (each
    set resampled with replacement), a float; ``None`` when a set has over :data:`MAX_ROWS`
    rows."""
    if max(len(a), len(b)) > MAX_ROWS:
        return None
    g = torch.Generator().manual_seed(seed)
    values = [
        frechet_distance_rows(
            a[torch.randint(len(a), (len(a),), generator=g)],
            b[torch.randint(len(b), (len(b),), generator=g)],
        )
        for _ in range(rounds)
    ]
    return float(np.std(values, ddof=1))


def mean_spread(hits: torch.Tensor, rounds: int = ROUNDS, seed: int = 0) -> float | None:
    """Bootstrap standard error of the mean of ``hits`` (e.g. 0/1 correct per image)."""
    hits = torch.as_tensor(hits).double().flatten()
    if len(hits) < 2:
        return None
    g = torch.Generator().manual_seed(seed)
    picks = torch.randint(len(hits), (rounds, len(hits)), generator=g)
    return float(hits[picks].mean(1).std())


@torch.inference_mode()
def feature_rows(images, feature_fn, batch_size: int = 250, device="cpu") -> torch.Tensor:
    """(N, D) float64 features ``feature_fn(uint8 NCHW) -> (B, D)`` of every image of
    ``images`` (any source of :func:`sfd.eval.sources.open_images`), on the CPU, in order."""
    source = open_images(images)
    rows = []
    for i in range(0, len(source), batch_size):
        batch = torch.from_numpy(source.read(i, min(i + batch_size, len(source))))
        if batch.shape[-1] == 1:  # grayscale: replicated to RGB
            batch = batch.expand(-1, -1, -1, 3)
        rows.append(feature_fn(batch.permute(0, 3, 1, 2).to(device)).double().cpu())
    return torch.cat(rows)


def fd_with_spread(feature_fn, samples, ref, batch_size: int = 250, device="cpu") -> dict:
    """For sets of at most :data:`MAX_ROWS` images: the Fréchet distance in ``feature_fn``'s
    space, its bootstrap standard error and the images of each set
    (``{"fd", "spread", "images": [samples, reference]}``)."""
    a = feature_rows(samples, feature_fn, batch_size, device)
    b = feature_rows(ref, feature_fn, batch_size, device)
    return {
        "fd": frechet_distance_rows(a, b),
        "spread": fd_spread(a, b),
        "images": [len(a), len(b)],
    }
