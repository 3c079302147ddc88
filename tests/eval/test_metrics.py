"""Fréchet distance, Inception Score and precision/recall against closed forms."""

import numpy as np
import pytest
import torch

from sfd.eval.metrics import (
    frechet_distance,
    inception_score,
    manifold_radii,
    pairwise_sq_distances,
    precision_recall,
)
from sfd.eval.stats import FeatureStats


def random_stats(seed: int, dim: int = 8) -> FeatureStats:
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((dim, dim))
    return FeatureStats(rng.standard_normal(dim), a @ a.T + 0.1 * np.eye(dim))


def test_distance_to_itself_is_zero():
    s = random_stats(0)
    assert abs(frechet_distance(s, s)) < 1e-8


def test_symmetric():
    a, b = random_stats(0), random_stats(1)
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-9)


def test_diagonal_gaussians_closed_form():
    rng = np.random.default_rng(2)
    mu1, mu2 = rng.standard_normal(5), rng.standard_normal(5)
    s1, s2 = rng.uniform(0.1, 2, 5), rng.uniform(0.1, 2, 5)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    got = frechet_distance(FeatureStats(mu1, np.diag(s1)), FeatureStats(mu2, np.diag(s2)))
    assert got == pytest.approx(expected, rel=1e-9)


def test_scaled_covariance_closed_form():
    # S2 = c^2 S1 gives tr(S1 + c^2 S1 - 2 c S1) = (1 - c)^2 tr(S1).
    s = random_stats(3)
    scaled = FeatureStats(s.mu, 9 * s.sigma)
    assert frechet_distance(s, scaled) == pytest.approx(4 * np.trace(s.sigma), rel=1e-8)


def test_singular_covariances_and_torch_inputs():
    x = torch.randn(4, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    stats = FeatureStats(x.mean(0).numpy(), np.cov(x.numpy(), rowvar=False))  # rank 3 of 16
    assert abs(frechet_distance(stats, stats)) < 1e-6


def test_dimension_mismatch():
    with pytest.raises(ValueError, match="different dimension"):
        frechet_distance(random_stats(0, 4), random_stats(0, 5))


def test_inception_score_of_one_class_is_one():
    probs = np.zeros((50, 1008))
    probs[:, 7] = 1
    assert inception_score(probs) == pytest.approx(1.0)


@pytest.mark.parametrize("k", [1, 2, 10, 1000])
def test_inception_score_of_k_equally_used_classes_is_k(k):
    probs = torch.eye(1008, dtype=torch.float64)[torch.arange(5 * k) % k]
    assert inception_score(probs) == pytest.approx(k, rel=1e-9)


def test_inception_score_splits_follow_sample_order():
    probs = np.eye(2)[np.repeat([0, 1], 6)]  # first half class 0, second half class 1
    assert inception_score(probs, split_size=12) == pytest.approx(2.0)
    assert inception_score(probs, split_size=6) == pytest.approx(1.0)


def clusters(seed: int, n: int, centre: float, dim: int = 8) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return centre + torch.randn(n, dim, generator=g)


@pytest.mark.parametrize("half", [True, False])
def test_precision_recall_of_identical_sets_is_one(half):
    x = clusters(0, 40, 0.0)
    assert precision_recall(x, x.numpy(), half=half) == (1.0, 1.0)


@pytest.mark.parametrize("half", [True, False])
def test_precision_recall_of_far_apart_sets_is_zero(half):
    assert precision_recall(clusters(0, 30, 0.0), clusters(1, 20, 100.0), half=half) == (0.0, 0.0)


def test_precision_recall_with_half_the_samples_off_manifold():
    ref = clusters(0, 30, 0.0)
    samples = torch.cat([ref, clusters(1, 30, 100.0)])
    precision, recall = precision_recall(ref, samples, block_size=7)
    assert (precision, recall) == (0.5, 1.0)


def test_radii_are_kth_neighbour_distances():
    x = clusters(0, 25, 0.0)
    d = torch.cdist(x.double(), x.double()) ** 2
    expected = d.sort(dim=1).values[:, 3]  # index 0 is the point itself
    radii = manifold_radii(x, k=3, block_size=6, half=False)
    torch.testing.assert_close(radii.double(), expected, rtol=1e-4, atol=1e-4)


def test_block_size_does_not_change_precision_recall():
    ref, sam = clusters(0, 50, 0.0), clusters(1, 45, 0.7)
    assert precision_recall(ref, sam, block_size=8) == precision_recall(ref, sam, block_size=1024)


def test_half_precision_distances_round_like_float16():
    u, v = clusters(0, 5, 1.0), clusters(1, 6, 1.0)
    full = pairwise_sq_distances(u, v, half=False)
    half = pairwise_sq_distances(u, v, half=True)
    torch.testing.assert_close(half, full, rtol=5e-3, atol=5e-2)
    assert torch.equal(half, half.half().float())  # values are float16-representable
    huge = pairwise_sq_distances(u * 1e4, v * 1e4, half=True)  # float16 overflows: float32 path
    assert torch.isfinite(huge).all()


def test_eigh_trace_equals_sqrtm():
    import numpy as np

    from sfd.eval.metrics import frechet_distance
    from sfd.eval.stats import FeatureStats

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(200, 16)), rng.normal(size=(300, 16)) @ rng.normal(size=(16, 16))
    s1 = FeatureStats(a.mean(0), np.cov(a, rowvar=False))
    s2 = FeatureStats(b.mean(0) + 1, np.cov(b, rowvar=False))
    assert np.isclose(frechet_distance(s1, s2, method="eigh"), frechet_distance(s1, s2), rtol=1e-8)
    assert abs(frechet_distance(s1, s1, method="eigh")) < 1e-8
