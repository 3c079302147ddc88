"""Evaluation with the ADM evaluator's definitions, in PyTorch (no TensorFlow).

FID, sFID, Inception Score and precision/recall as in openai/guided-diffusion
``evaluations/evaluator.py``, on the TF ``inception-2015-12-05`` Inception-v3 ported to torch
(:mod:`sfd.eval.inception`). See ``docs/EVALUATION.md`` for the paper's protocol.
"""

from sfd.eval.evaluate import (
    ALL_METRICS,
    evaluate,
    format_results,
    frechet_distance_with,
    inception_score_order,
    shuffled_inception_score,
    write_results,
)
from sfd.eval.features import compute_feature_stats, compute_inception_features
from sfd.eval.inception import FIDInceptionV3, load_inception, resize_bilinear_tf1
from sfd.eval.metrics import frechet_distance, inception_score, precision_recall
from sfd.eval.reference import Reference, compute_reference_stats, load_reference
from sfd.eval.sources import open_images
from sfd.eval.stats import FeatureStats, RunningStats

__all__ = [
    "ALL_METRICS",
    "FIDInceptionV3",
    "FeatureStats",
    "Reference",
    "RunningStats",
    "compute_feature_stats",
    "compute_inception_features",
    "compute_reference_stats",
    "evaluate",
    "format_results",
    "frechet_distance",
    "frechet_distance_with",
    "inception_score",
    "inception_score_order",
    "load_inception",
    "load_reference",
    "open_images",
    "precision_recall",
    "resize_bilinear_tf1",
    "shuffled_inception_score",
    "write_results",
]
