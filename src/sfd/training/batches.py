"""Deterministic batches: which samples, views and random draws step ``k`` uses.

Everything a training step consumes is a function of ``(seed, step)`` alone:

- the data order is a permutation per epoch seeded by ``(seed, epoch)``; step k takes the global
  positions ``[k B, (k + 1) B)`` of the concatenated epochs, so the position is the step count;
- the view (image or flip), the posterior draw, the base times, the noise and the label-drop
  mask of the WHOLE global batch are drawn on the CPU from a generator seeded by
  ``(seed, step)``; each rank and micro-batch slices its own rows.

So a resumed run continues exactly, and a global batch is the same on 1 or N processes.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from sfd.config import Config
from sfd.data.latent_shards import LatentDataset
from sfd.flow.path import sample_base_time


def derived_seed(*parts: int) -> int:
    """A 63-bit seed from integers, well mixed (numpy SeedSequence)."""
    state = np.random.SeedSequence([int(p) for p in parts]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


class EpochOrder:
    """Global sample positions -> dataset indices through per-epoch seeded permutations."""

    def __init__(self, num_samples: int, seed: int) -> None:
        if num_samples < 1:
            raise ValueError("the latent dataset is empty")
        self.n = num_samples
        self.seed = seed
        self._cache: dict[int, np.ndarray] = {}

    def perm(self, epoch: int) -> np.ndarray:
        perm = self._cache.get(epoch)
        if perm is None:  # the cache is replaced, never mutated: safe from prefetch threads
            g = torch.Generator().manual_seed(derived_seed(self.seed, epoch, 0xDA7A))
            perm = torch.randperm(self.n, generator=g).numpy()
            self._cache = {epoch: perm, **{e: p for e, p in self._cache.items() if e >= epoch - 1}}
        return perm

    def indices(self, start: int, count: int) -> np.ndarray:
        pos = np.arange(start, start + count, dtype=np.int64)
        epochs, offsets = pos // self.n, pos % self.n
        return np.array(
            [self.perm(int(e))[o] for e, o in zip(epochs, offsets, strict=True)], dtype=np.int64
        )


@dataclass
class Batch:
    """One (micro-)batch, ready for :func:`sfd.training.loss.flow_loss` (CPU tensors)."""

    x1: torch.Tensor  # normalised composite latents (B, C, H, W)
    y: torch.Tensor  # labels with dropped ones set to the null class
    x0: torch.Tensor  # noise
    base_time: torch.Tensor  # (B,)
    repa: torch.Tensor | None  # (B, D, H, W) or None

    def slice(self, lo: int, hi: int) -> Batch:
        return Batch(
            self.x1[lo:hi],
            self.y[lo:hi],
            self.x0[lo:hi],
            self.base_time[lo:hi],
            None if self.repa is None else self.repa[lo:hi],
        )

    def to(self, device: torch.device | str) -> Batch:
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device, non_blocking=True)

        return Batch(
            move(self.x1), move(self.y), move(self.x0), move(self.base_time), move(self.repa)
        )


def global_batch(
    dataset: LatentDataset,
    order: EpochOrder,
    cfg: Config,
    step: int,
    lo: int = 0,
    hi: int | None = None,
) -> Batch:
    """Rows [lo, hi) of the global batch of ``step`` (all draws made for the whole batch)."""
    b = cfg.train.global_batch_size
    hi = b if hi is None else hi
    lat = cfg.latent
    g = torch.Generator().manual_seed(derived_seed(cfg.train.seed, step))
    view = (
        torch.randint(0, 2, (b,), generator=g)
        if cfg.train.hflip
        else torch.zeros(b, dtype=torch.long)
    )
    shape = (b, lat.channels, lat.size, lat.size)
    eps = torch.randn(shape, generator=g)
    base = sample_base_time(b, cfg.flow.time_dist, g)
    x0 = torch.randn(shape, generator=g)
    drop = torch.rand(b, generator=g) < cfg.model.class_dropout_prob

    index = order.indices(step * b + lo, hi - lo)
    rows = dataset.gather(index, view[lo:hi].numpy())
    mean = torch.cat([rows["tex_mean"], rows["sem_mean"]], dim=1).float()
    if cfg.train.sample_posterior:
        std = torch.cat([rows["tex_std"], rows["sem_std"]], dim=1).float()
        mean = mean + std * eps[lo:hi]
    x1 = dataset.stats.normalize(mean)
    y = torch.where(
        drop[lo:hi], torch.full_like(rows["label"], cfg.model.num_classes), rows["label"]
    )
    repa = rows["repa"] if "repa" in rows and cfg.model.repa_dim > 0 else None
    return Batch(x1, y, x0[lo:hi], base[lo:hi], repa)


LOADER_THREADS = "sfd-loader"  # the name prefix of the loader threads


class Prefetch:
    """The batches of the coming steps, made by loader threads while a step trains.

    Batches are pure functions of the step, so threads may run ahead in any order; ``make(step)``
    gives a step's batches. A context manager: leaving it drops what was not taken.
    """

    def __init__(self, make: Callable[[int], list[Batch]], ahead: int) -> None:
        self.make, self.ahead = make, max(1, ahead)
        self.pool = ThreadPoolExecutor(max_workers=self.ahead, thread_name_prefix=LOADER_THREADS)
        self.pending: dict[int, Future] = {}

    def take(self, step: int, end: int, first: int = 0) -> list[Batch] | None:
        """The batches of ``step`` (``None`` before ``first``: a step that is skipped), and
        the next ``ahead`` steps of ``[first, end)`` queued."""
        future = self.pending.pop(step, None)
        for s in range(max(step + 1, first), min(step + 1 + self.ahead, end)):
            if s not in self.pending:
                self.pending[s] = self.pool.submit(self.make, s)
        if step < first:
            return None
        return future.result() if future is not None else self.make(step)

    def clear(self) -> None:
        """Forget the queued steps (the run went back: they come again, in order)."""
        self.pending.clear()

    def __enter__(self) -> Prefetch:
        return self

    def __exit__(self, *exc) -> None:
        self.pool.shutdown(cancel_futures=True)
