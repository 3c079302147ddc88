"""Streaming Gaussian statistics of feature vectors, in float64 and mergeable across processes.

FID (Heusel et al. 2017) and sFID (Nash et al. 2021) compare the mean and covariance of feature
sets. The ADM evaluator computes them with ``np.mean`` and ``np.cov(rowvar=False)`` over all
activations held in memory; :class:`RunningStats` gets the same numbers from three running sums
(count, sum, sum of outer products) that can be added across batches and, with an all-reduce,
across ranks, so the result does not depend on batch size or process count.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class FeatureStats:
    """Mean (D,) and covariance (D, D) of a feature set, float64 numpy arrays."""

    mu: np.ndarray
    sigma: np.ndarray

    def __post_init__(self):
        mu, sigma = np.asarray(self.mu), np.asarray(self.sigma)
        if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
            raise ValueError(
                f"expected mu (D,) and sigma (D, D), got mu {mu.shape} and sigma {sigma.shape}"
            )
        object.__setattr__(self, "mu", mu.astype(np.float64))
        object.__setattr__(self, "sigma", sigma.astype(np.float64))

    @classmethod
    def of(cls, features) -> FeatureStats:
        """The Gaussian fit (mean, unbiased covariance) of (N, D) features, N >= 2."""
        x = torch.as_tensor(features).detach().cpu().double().numpy()
        if x.ndim != 2 or len(x) < 2:
            raise ValueError(f"expected (N, D) features with N >= 2; got shape {x.shape}")
        return cls(x.mean(0), np.cov(x, rowvar=False))


class RunningStats:
    """Count, sum and sum of outer products of (B, D) feature batches, in float64.

    ``update`` adds a batch; ``merge`` adds another accumulator; ``as_tensor``/``from_tensor``
    give one flat float64 tensor ``[count, sum (D), outer (D*D)]`` whose elementwise sum over
    ranks is the accumulator of the union (``all_reduce_`` does exactly that). ``mean`` and
    ``covariance`` match ``np.mean(x, 0)`` and ``np.cov(x, rowvar=False)`` (unbiased, n - 1).

    Float64 sums are exact enough for FID features: the covariance loses about
    ``eps64 * |mean|^2 / var`` relative accuracy, ~1e-15 for Inception activations.
    """

    def __init__(self, dim: int, device: str | torch.device = "cpu"):
        if dim < 1:
            raise ValueError(f"feature dimension must be positive, got {dim}")
        self.dim = dim
        self.count = torch.zeros((), dtype=torch.float64, device=device)
        self.sum = torch.zeros(dim, dtype=torch.float64, device=device)
        self.outer = torch.zeros(dim, dim, dtype=torch.float64, device=device)

    def update(self, features: torch.Tensor | np.ndarray) -> RunningStats:
        x = torch.as_tensor(features).to(self.sum.device, torch.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected features of shape (B, {self.dim}), got {tuple(x.shape)}")
        self.count += x.shape[0]
        self.sum += x.sum(0)
        self.outer += x.T @ x
        return self

    def merge(self, other: RunningStats) -> RunningStats:
        if other.dim != self.dim:
            raise ValueError(f"cannot merge statistics of dimension {other.dim} into {self.dim}")
        self.count += other.count.to(self.count.device)
        self.sum += other.sum.to(self.sum.device)
        self.outer += other.outer.to(self.outer.device)
        return self

    def as_tensor(self) -> torch.Tensor:
        """Flat float64 ``[count, sum, outer]`` (length 1 + D + D*D); summable across ranks."""
        return torch.cat([self.count.reshape(1), self.sum, self.outer.reshape(-1)])

    @classmethod
    def from_tensor(cls, flat: torch.Tensor, dim: int) -> RunningStats:
        if flat.shape != (1 + dim + dim * dim,):
            raise ValueError(f"expected a flat tensor of length {1 + dim + dim * dim} for D={dim}")
        stats = cls(dim, device=flat.device)
        flat = flat.to(torch.float64)
        stats.count = flat[0].clone()
        stats.sum = flat[1 : 1 + dim].clone()
        stats.outer = flat[1 + dim :].reshape(dim, dim).clone()
        return stats

    def all_reduce_(self, device: str | torch.device | None = None) -> RunningStats:
        """Sum this accumulator over all ranks in place (no-op without a process group).

        ``device`` is where the collective runs (a CUDA device for NCCL); defaults to here.
        """
        if not (dist.is_available() and dist.is_initialized()):
            return self
        flat = self.as_tensor().to(device or self.sum.device)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        reduced = RunningStats.from_tensor(flat.to(self.sum.device), self.dim)
        self.count, self.sum, self.outer = reduced.count, reduced.sum, reduced.outer
        return self

    @property
    def n(self) -> int:
        return int(self.count.item())

    @property
    def mean(self) -> np.ndarray:
        if self.n < 1:
            raise ValueError("mean of an empty feature set")
        return (self.sum / self.count).cpu().numpy()

    @property
    def covariance(self) -> np.ndarray:
        if self.n < 2:
            raise ValueError(f"covariance needs at least 2 feature vectors, got {self.n}")
        mu = self.sum / self.count
        cov = (self.outer - self.count * torch.outer(mu, mu)) / (self.count - 1)
        return ((cov + cov.T) / 2).cpu().numpy()

    def to_feature_stats(self) -> FeatureStats:
        return FeatureStats(self.mean, self.covariance)
