"""One call from samples and a reference batch to the ADM evaluator's metrics.

Follows openai/guided-diffusion ``evaluations/evaluator.py`` (``main``): FID on pool3, sFID on
``mixed_6/conv[..., :7]``, Inception Score on ``softmax(pool3 @ W)`` in 5000-sample splits of
a fixed seeded permutation of the samples (:func:`inception_score_order`; ADM scores the file
order, which the release shuffles first), precision/recall with k = 3 on pool3 (reference
manifold vs sample manifold).
Samples are streamed in batches; with ``torch.distributed`` initialised each rank scores its
index shard, statistics are all-reduced in float64, and rank 0's metrics are broadcast, so the
numbers do not depend on batch size or process count (up to float rounding in the network).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from sfd.distributed import broadcast_object, rank_and_world
from sfd.errors import BadInputError
from sfd.eval.features import (
    FeatureFn,
    InceptionLike,
    compute_feature_stats,
    compute_inception_features,
)
from sfd.eval.metrics import frechet_distance, inception_score, precision_recall
from sfd.eval.reference import Reference, load_reference
from sfd.eval.sources import open_images
from sfd.eval.stats import FeatureStats, RunningStats

logger = logging.getLogger(__name__)

ALL_METRICS = ("fid", "sfid", "inception_score", "precision", "recall")
SOFTMAX_BATCH = 512  # ADM's softmax_batch_size
IS_SHUFFLE_SEED = 42  # the seed of the Inception Score's sample order (see inception_score_order)


def evaluate(
    samples,
    ref,
    *,
    feature_net: InceptionLike,
    batch_size: int = 250,
    device="cpu",
    metrics: Sequence[str] = ALL_METRICS,
    split_size: int = 5000,
    nearest_k: int = 3,
    progress: bool = False,
    is_shuffle_seed: int | None = IS_SHUFFLE_SEED,
) -> dict[str, float | int]:
    """Score ``samples`` (npz path, image folder, uint8 array) against ``ref``.

    ``ref`` is anything :func:`load_reference` accepts, or a :class:`Reference`.
    Returns ``{"num_samples", "num_reference", <each requested metric>}``, identical on all
    ranks. ``split_size`` is the Inception Score split (ADM: 5000); ``nearest_k`` the
    precision/recall neighbourhood (ADM: 3). The Inception Score sees the samples in the order
    :func:`inception_score_order` gives for ``is_shuffle_seed`` (None: the file order, as ADM).
    """
    metrics = _check_metrics(metrics)
    reference = load_reference(ref)
    _check_reference(reference, metrics)
    source = open_images(samples)
    _check_counts(len(source), reference, metrics, split_size, nearest_k)
    sample = compute_inception_features(
        source, feature_net, batch_size=batch_size, device=device, progress=progress
    )
    ref_parts = _reference_parts(reference, metrics, feature_net, batch_size, device, progress)
    outcome = None
    if rank_and_world()[0] == 0:  # score once; a failure is re-raised on every rank
        try:
            scores = _score(
                sample,
                ref_parts,
                metrics,
                feature_net,
                device,
                split_size,
                nearest_k,
                is_shuffle_seed,
            )
            outcome = (scores, None)
        except ValueError as e:
            outcome = (None, str(e))
    scores, error = broadcast_object(outcome)
    if error is not None:
        raise ValueError(error)
    return {"num_samples": len(source), "num_reference": reference.num_images, **scores}


def _score(sample, ref_parts, metrics, net, device, split_size, nearest_k, is_seed) -> dict:
    ref_pool, ref_spatial, ref_feats = ref_parts
    results = {}
    if "fid" in metrics:
        results["fid"] = frechet_distance(sample.pool.to_feature_stats(), ref_pool)
    if "sfid" in metrics:
        results["sfid"] = frechet_distance(sample.spatial.to_feature_stats(), ref_spatial)
    if "inception_score" in metrics:
        probs = _softmax(net, sample.pool_features, device)
        results["inception_score"] = shuffled_inception_score(probs, split_size, is_seed)
    if "precision" in metrics or "recall" in metrics:
        p, r = precision_recall(ref_feats, sample.pool_features, nearest_k, device=device)
        results.update({m: v for m, v in (("precision", p), ("recall", r)) if m in metrics})
    return results


def inception_score_order(n: int, seed: int | None = IS_SHUFFLE_SEED) -> np.ndarray:
    """The order in which the Inception Score sees ``n`` samples.

    ``np.random.default_rng(seed).permutation(n)`` (seed 42 by default), the same for every run,
    rank count and batch size. ADM averages IS over consecutive splits of 5,000 in file order, so
    the order matters: ``sfd sample`` writes image ``i`` with label ``i mod K``, which puts
    exactly 5,000 / K of every class in each split and inflates IS (a class-sorted file deflates
    it). The release shuffles its PNGs (seed 42) before packing them (docs/METHOD.md §5.1, §6); this
    plays that role (it is not the release's exact order, which depends on its file names).
    ``seed=None`` keeps the file order. FID, sFID, precision and recall do not depend on order.
    """
    if seed is None:
        return np.arange(n)
    return np.random.default_rng(seed).permutation(n)


def shuffled_inception_score(
    probs: torch.Tensor | np.ndarray, split_size: int = 5000, seed: int | None = IS_SHUFFLE_SEED
) -> float:
    """:func:`inception_score` of ``probs`` (N, classes) in :func:`inception_score_order`."""
    order = inception_score_order(len(probs), seed)
    return inception_score(np.asarray(probs)[order], split_size)


def _check_metrics(metrics: Sequence[str]) -> tuple[str, ...]:
    metrics = tuple(metrics)
    unknown = sorted(set(metrics) - set(ALL_METRICS))
    if unknown or not metrics:
        raise ValueError(f"unknown metrics {unknown}; choose from {', '.join(ALL_METRICS)}")
    return metrics


def _check_counts(n: int, ref: Reference, metrics, split_size: int, nearest_k: int) -> None:
    """Refuse, before any feature is computed, sets too small for the metrics asked for."""
    if n < 2:
        raise BadInputError(f"the samples hold {n} image(s); every metric needs at least 2")
    if "inception_score" in metrics and min(split_size, n) < 2:
        raise BadInputError(
            f"the Inception Score needs at least 2 images per split; {n} samples in splits of "
            f"{split_size}"
        )
    if "precision" in metrics or "recall" in metrics:
        n_ref = len(ref.pool_features) if ref.pool_features is not None else ref.num_images
        for name, count in (("the samples", n), (f"reference {ref.name}", n_ref)):
            if count is not None and count <= nearest_k:
                raise BadInputError(
                    f"{name} hold {count} images; precision/recall need at least k + 1 = "
                    f"{nearest_k + 1} in each set (drop them with --metrics)"
                )


def _check_reference(ref: Reference, metrics: tuple[str, ...]) -> None:
    if ref.images is not None:
        return
    needs = {
        "fid": ref.pool is not None,
        "sfid": ref.spatial is not None,
        "precision": ref.pool_features is not None,
        "recall": ref.pool_features is not None,
    }
    lacking = [m for m in metrics if not needs.get(m, True)]
    if lacking:
        raise ValueError(
            f"reference {ref.name} has no images and lacks what {lacking} need "
            "(statistics or pool3 features); pass a reference with images or drop those metrics"
        )


def _reference_parts(ref: Reference, metrics, net, batch_size, device, progress):
    """(pool stats, spatial stats, pool3 vectors) of the reference; images only if needed."""
    pool, spatial, feats = ref.pool, ref.spatial, ref.pool_features
    pr = "precision" in metrics or "recall" in metrics
    need = (
        ("fid" in metrics and pool is None)
        or ("sfid" in metrics and spatial is None)
        or (pr and feats is None)
    )
    if need:
        logger.info("computing reference features from %s", ref.images.name)
        result = compute_inception_features(
            ref.images, net, batch_size=batch_size, device=device, progress=progress
        )
        # Stored statistics win over recomputed ones, as in ADM's read_statistics.
        pool = result.pool.to_feature_stats() if pool is None else pool
        spatial = result.spatial.to_feature_stats() if spatial is None else spatial
        feats = result.pool_features if feats is None else feats
    return pool, spatial, feats


@torch.inference_mode()
def _softmax(net: InceptionLike, pool3: torch.Tensor, device) -> torch.Tensor:
    """ADM's ``softmax(pool3 @ W)`` (no bias, all 1008 classes), in float64 on CPU."""
    probs = []
    for i in range(0, len(pool3), SOFTMAX_BATCH):
        logits = net.logits(pool3[i : i + SOFTMAX_BATCH].to(device))
        probs.append(torch.softmax(logits.double(), dim=1).cpu())
    return torch.cat(probs)


def frechet_distance_with(
    feature_fn: FeatureFn,
    samples,
    ref,
    *,
    batch_size: int = 250,
    device="cpu",
    progress: bool = False,
    method: str = "eigh",
) -> float:
    """Fréchet distance in the feature space of any ``feature_fn(uint8 NCHW) -> (B, D)``.

    ``ref`` is an image source (npz path, folder, array) or precomputed
    :class:`FeatureStats`/:class:`RunningStats` of the same ``feature_fn``. ``method`` is that
    of :func:`frechet_distance` (exact ``eigh`` by default: these features are not ADM's).
    """
    kwargs = {"batch_size": batch_size, "device": device, "progress": progress}
    stats = compute_feature_stats(samples, feature_fn, **kwargs).to_feature_stats()
    if isinstance(ref, RunningStats):
        ref = ref.to_feature_stats()
    if not isinstance(ref, FeatureStats):
        ref = compute_feature_stats(ref, feature_fn, **kwargs).to_feature_stats()
    return frechet_distance(stats, ref, method=method)


def format_results(results: dict) -> str:
    """A two-column text table of ``evaluate``'s results."""
    names = {
        "fid": "FID",
        "sfid": "sFID",
        "inception_score": "Inception Score",
        "precision": "Precision",
        "recall": "Recall",
        "num_samples": "samples",
        "num_reference": "reference images",
    }
    rows = [
        (names.get(k, k), f"{v:.4f}" if isinstance(v, float) else str(v))
        for k, v in results.items()
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def write_results(results: dict, path: str | Path) -> None:
    """Write the results as indented JSON (creating parent folders)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
