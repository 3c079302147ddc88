"""Feature extraction over an image source: streamed in batches, split by index across ranks.

Each rank reads only its contiguous shard of the images (:func:`shard_range`); Gaussian
statistics are accumulated in float64 (:class:`RunningStats`) and all-reduced; the per-image
``pool3`` vectors that precision/recall and the Inception Score need are kept as float32 and
gathered in global order (ADM keeps the same arrays: 50K x 2048 x 4 B = 400 MB).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import NamedTuple, Protocol

import torch
from tqdm.auto import tqdm

from sfd.distributed import (
    all_gather_rows,
    collective_device,
    rank_and_world,
    shard_range,
)
from sfd.eval.inception import InceptionFeatures
from sfd.eval.sources import ImageSource, open_images
from sfd.eval.stats import RunningStats

logger = logging.getLogger(__name__)

FeatureFn = Callable[[torch.Tensor], torch.Tensor]  # uint8 (B, 3, H, W) -> (B, D)


class InceptionLike(Protocol):
    """What the evaluator needs from a feature network (``FIDInceptionV3`` is one)."""

    def __call__(self, images: torch.Tensor) -> InceptionFeatures: ...

    def logits(self, pool3: torch.Tensor) -> torch.Tensor: ...


class InceptionResult(NamedTuple):
    pool: RunningStats  # pool3 statistics (FID)
    spatial: RunningStats  # mixed_6/conv statistics (sFID)
    pool_features: torch.Tensor  # (N, 2048) float32 on CPU, in image order


def iter_shard(
    source: ImageSource, batch_size: int, device, progress: bool = False
) -> Iterator[torch.Tensor]:
    """This rank's images as uint8 (B, 3, H, W) batches on ``device``, in index order
    (grayscale sources are replicated to three channels)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    rank, world = rank_and_world()
    if len(source) < world:
        raise ValueError(f"{source.name}: {len(source)} images for {world} processes")
    start, stop = shard_range(len(source), rank, world)
    logger.info("%s: rank %d reads images [%d, %d)", source.name, rank, start, stop)
    steps = range(start, stop, batch_size)
    for i in tqdm(steps, desc=source.name, disable=not progress or rank != 0):
        batch = torch.from_numpy(source.read(i, min(i + batch_size, stop)))
        if batch.shape[-1] == 1:  # grayscale: replicated to RGB, as PIL's convert("RGB")
            batch = batch.expand(-1, -1, -1, 3)
        yield batch.permute(0, 3, 1, 2).to(device)  # NHWC -> NCHW


@torch.inference_mode()
def compute_inception_features(
    images, net: InceptionLike, *, batch_size: int = 250, device="cpu", progress: bool = False
) -> InceptionResult:
    """pool3 and spatial statistics plus pool3 vectors of all images (every rank gets all)."""
    source = open_images(images)
    pool = spatial = None
    kept = []
    for batch in iter_shard(source, batch_size, device, progress):
        out = net(batch)
        if pool is None:
            pool = RunningStats(out.pool3.shape[1], device)
            spatial = RunningStats(out.spatial.shape[1], device)
        pool.update(out.pool3)
        spatial.update(out.spatial)
        kept.append(out.pool3.float().cpu())
    comm = collective_device()
    pool.all_reduce_(comm)
    spatial.all_reduce_(comm)
    return InceptionResult(pool, spatial, all_gather_rows(torch.cat(kept)))


@torch.inference_mode()
def compute_feature_stats(
    images, feature_fn: FeatureFn, *, batch_size: int = 250, device="cpu", progress: bool = False
) -> RunningStats:
    """Gaussian statistics of ``feature_fn(uint8 NCHW batch) -> (B, D)`` over all images."""
    source = open_images(images)
    stats = None
    for batch in iter_shard(source, batch_size, device, progress):
        feats = feature_fn(batch)
        if feats.ndim != 2 or len(feats) != len(batch):
            raise ValueError(
                f"feature_fn must map a batch of {len(batch)} images to (B, D) features, "
                f"got shape {tuple(feats.shape)}"
            )
        if stats is None:
            stats = RunningStats(feats.shape[1], device)
        stats.update(feats)
    return stats.all_reduce_(collective_device())
