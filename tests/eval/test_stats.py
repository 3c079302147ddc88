"""Streaming float64 statistics equal numpy's mean/cov, however the data is chunked or merged."""

import numpy as np
import pytest
import torch

from sfd.eval.stats import FeatureStats, RunningStats


@pytest.fixture
def features():
    rng = np.random.default_rng(0)
    # Offset mean and correlated coordinates, like non-negative Inception activations.
    return 10 + rng.standard_normal((101, 6)) @ rng.standard_normal((6, 6))


def assert_matches_numpy(stats: RunningStats, x: np.ndarray):
    assert stats.n == len(x)
    np.testing.assert_allclose(stats.mean, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats.covariance, np.cov(x, rowvar=False), rtol=1e-9, atol=1e-12)


def test_single_update_matches_numpy(features):
    assert_matches_numpy(RunningStats(6).update(features), features)


def test_chunked_updates_match_numpy(features):
    stats = RunningStats(6)
    for chunk in np.array_split(features, 7):
        stats.update(torch.from_numpy(chunk))
    assert_matches_numpy(stats, features)


def test_merged_accumulators_match_numpy(features):
    parts = [RunningStats(6).update(c) for c in np.array_split(features, 3)]
    merged = RunningStats(6)
    for part in parts:
        merged.merge(part)
    assert_matches_numpy(merged, features)


def test_summed_flat_tensors_are_the_union(features):
    # What an all-reduce over ranks does: sum the flat views elementwise.
    parts = [RunningStats(6).update(c) for c in np.array_split(features, 4)]
    flat = sum(p.as_tensor() for p in parts)
    assert flat.dtype == torch.float64 and flat.shape == (1 + 6 + 36,)
    assert_matches_numpy(RunningStats.from_tensor(flat, 6), features)


def test_all_reduce_without_process_group_is_identity(features):
    stats = RunningStats(6).update(features)
    assert_matches_numpy(stats.all_reduce_(), features)


def test_float32_features_are_accumulated_in_float64():
    # With a float32 accumulator the |mean|^2 / var = 1e4 cancellation would cost ~1e-3.
    x = np.float32(100) + np.random.default_rng(1).standard_normal((1000, 3)).astype(np.float32)
    stats = RunningStats(3).update(x)
    expected = np.cov(x.astype(np.float64), rowvar=False)
    np.testing.assert_allclose(stats.covariance, expected, rtol=1e-9, atol=1e-12)


def test_errors():
    with pytest.raises(ValueError, match=r"\(B, 4\)"):
        RunningStats(4).update(np.zeros((3, 5)))
    with pytest.raises(ValueError, match="at least 2"):
        _ = RunningStats(4).update(np.zeros((1, 4))).covariance
    with pytest.raises(ValueError, match="dimension"):
        RunningStats(4).merge(RunningStats(3))
    with pytest.raises(ValueError, match="sigma"):
        FeatureStats(np.zeros(3), np.zeros((2, 2)))
