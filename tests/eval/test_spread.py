"""The bootstrap spread of few-image metrics: the Fréchet distance through the (N, M) cross
product equals the (D, D) eigen-decomposition's, and the spread shrinks as images are added."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sfd.eval.metrics import frechet_distance
from sfd.eval.spread import MAX_ROWS, fd_spread, frechet_distance_rows, mean_spread
from sfd.eval.stats import FeatureStats


@pytest.mark.parametrize(("n", "m", "d"), [(5, 7, 40), (30, 30, 16), (3, 50, 64)])
def test_fd_through_the_cross_product_equals_the_eigendecomposition(n, m, d):
    g = torch.Generator().manual_seed(n)
    a = torch.randn(n, d, generator=g, dtype=torch.float64)
    b = 0.7 * torch.randn(m, d, generator=g, dtype=torch.float64) + 0.3
    expected = frechet_distance(FeatureStats.of(a), FeatureStats.of(b), method="eigh")
    # (eigh takes square roots of ~1e-16 eigenvalues of the rank-deficient products: ~1e-8 each)
    assert frechet_distance_rows(a, b) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance_rows(a, a) == pytest.approx(0, abs=1e-9)


def test_the_fd_spread_shrinks_with_more_images():
    g = torch.Generator().manual_seed(0)

    def spread(n):
        return fd_spread(torch.randn(n, 8, generator=g), torch.randn(n, 8, generator=g) + 0.5)

    few, many = spread(10), spread(160)
    assert few > 2 * many > 0
    big = torch.zeros(MAX_ROWS + 1, 8)
    assert fd_spread(big, big) is None  # too many images to be worth the cost


def test_the_accuracy_spread_is_the_binomial_standard_error():
    hits = torch.tensor([1.0] * 30 + [0.0] * 10)  # p = 0.75 over 40 images
    expected = np.sqrt(0.75 * 0.25 / 40)
    assert mean_spread(hits, rounds=2000) == pytest.approx(expected, rel=0.1)
    assert mean_spread(torch.ones(1)) is None
