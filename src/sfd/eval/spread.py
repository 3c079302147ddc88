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
