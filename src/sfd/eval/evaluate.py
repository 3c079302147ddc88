"""One call from samples and a reference batch to the ADM evaluator's metrics.

Follows openai/guided-diffusion ``evaluations/evaluator.py`` (``main``): FID on pool3, sFID on
``mixed_6/conv[..., :7]``, Inception Score on ``softmax(pool3 @ W)`` in 5000-sample splits of
the given order, precision/recall with k = 3 on pool3 (reference manifold vs sample manifold).
Samples are streamed in batches; with ``torch.distributed`` initialised each rank scores its
index shard, statistics are all-reduced in float64, and rank 0's metrics are broadcast, so the
numbers do not depend on batch size or process count (up to float rounding in the network).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from sfd.eval.distributed import broadcast_object, rank_and_world
from sfd.eval.features import (
    FeatureFn,
    InceptionLike,
    compute_feature_stats,
    compute_inception_features,
)
from sfd.eval.images import open_images
from sfd.eval.metrics import frechet_distance, inception_score, precision_recall
from sfd.eval.reference import Reference, load_reference
from sfd.eval.stats import FeatureStats, RunningStats

logger = logging.getLogger(__name__)

ALL_METRICS = ("fid", "sfid", "inception_score", "precision", "recall")
SOFTMAX_BATCH = 512  # ADM's softmax_batch_size


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
) -> dict[str, float | int]:
    """Score ``samples`` (npz path, image folder, uint8 array) against ``ref``.

    ``ref`` is anything :func:`load_reference` accepts, or a :class:`Reference`.
    Returns ``{"num_samples", "num_reference", <each requested metric>}``, identical on all
    ranks. ``split_size`` is the Inception Score split (ADM: 5000); ``nearest_k`` the
    precision/recall neighbourhood (ADM: 3).
    """
    metrics = _check_metrics(metrics)
    reference = load_reference(ref)
    _check_reference(reference, metrics)
    source = open_images(samples)
    sample = compute_inception_features(
        source, feature_net, batch_size=batch_size, device=device, progress=progress
    )
    ref_parts = _reference_parts(reference, metrics, feature_net, batch_size, device, progress)
    outcome = None
    if rank_and_world()[0] == 0:  # score once; a failure is re-raised on every rank
        try:
            scores = _score(sample, ref_parts, metrics, feature_net, device, split_size, nearest_k)
            outcome = (scores, None)
        except ValueError as e:
            outcome = (None, str(e))
    scores, error = broadcast_object(outcome)
    if error is not None:
        raise ValueError(error)
    return {"num_samples": len(source), "num_reference": reference.num_images, **scores}


def _score(sample, ref_parts, metrics, net, device, split_size, nearest_k) -> dict:
    ref_pool, ref_spatial, ref_feats = ref_parts
    results = {}
    if "fid" in metrics:
        results["fid"] = frechet_distance(sample.pool.to_feature_stats(), ref_pool)
    if "sfid" in metrics:
        results["sfid"] = frechet_distance(sample.spatial.to_feature_stats(), ref_spatial)
    if "inception_score" in metrics:
        probs = _softmax(net, sample.pool_features, device)
        results["inception_score"] = inception_score(probs, split_size)
    if "precision" in metrics or "recall" in metrics:
        p, r = precision_recall(ref_feats, sample.pool_features, nearest_k, device=device)
        results.update({m: v for m, v in (("precision", p), ("recall", r)) if m in metrics})
    return results


def _check_metrics(metrics: Sequence[str]) -> tuple[str, ...]:
    metrics = tuple(metrics)
    unknown = sorted(set(metrics) - set(ALL_METRICS))
    if unknown or not metrics:
        raise ValueError(f"unknown metrics {unknown}; choose from {', '.join(ALL_METRICS)}")
    return metrics


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
