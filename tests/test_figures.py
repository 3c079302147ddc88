"""The sample grid takes any number of classes and of samples per class."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sfd.figures import MAX_ROWS, sample_grid


@pytest.mark.parametrize(
    ("classes", "samples", "per_class"),
    [(1, 5, 10), (1, 1, 1), (2, 0, 3), (3, 2, 10), (MAX_ROWS + 5, 50, 2)],
)
def test_sample_grid_with_any_number_of_classes_and_samples(tmp_path, classes, samples, per_class):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (samples, 8, 8, 3), dtype=np.uint8)
    labels = np.arange(samples) % classes
    path = tmp_path / "grid.png"
    sample_grid(images, labels, [f"class {c}" for c in range(classes)], path, per_class=per_class)
    with Image.open(path) as im:
        width, height = im.size
    assert width >= 50 and height >= 50
    assert height < 110 * 0.85 * (MAX_ROWS + 2)  # at most MAX_ROWS rows, whatever the classes
