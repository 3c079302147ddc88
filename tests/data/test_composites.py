"""The composites testbed: garments on photographs, deterministic, disjoint photographs, labels
kept, documented size and range, options checked (on a tiny written Fashion-MNIST)."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

from sfd.data.composites import TEST_BACKGROUNDS, TRAIN_BACKGROUNDS, FashionComposites
from sfd.data.fashion_mnist import FashionMNIST

N = 12


def _write(root, prefix: str, images: np.ndarray, labels: np.ndarray) -> None:
    for name, a in (
        (f"{prefix}-images-idx3-ubyte", images),
        (f"{prefix}-labels-idx1-ubyte", labels),
    ):
        data = bytes([0, 0, 0x08, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes()
        (root / f"{name}.gz").write_bytes(gzip.compress(data))


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """Garments that are solid 28 x 28 squares (opacity 1 everywhere): the whole garment box is
    the garment's colour, the rest the background."""
    root = tmp_path_factory.mktemp("fmnist")
    rng = np.random.default_rng(0)
    for prefix in ("train", "t10k"):
        images = np.full((N, 28, 28), 255, dtype=np.uint8)
        _write(root, prefix, images, rng.integers(0, 10, N).astype(np.uint8))
    return root


def test_an_image_is_a_pure_function_of_seed_split_and_index(root):
    a, b = FashionComposites(root, seed=3), FashionComposites(root, seed=3)
    for i in (0, 5, N - 1):
        assert torch.equal(a[i][0], b[i][0])
    other = FashionComposites(root, seed=4)
    assert not torch.equal(a[0][0], other[0][0])
    test = FashionComposites(root, "test", seed=3, backgrounds="train")
    assert not torch.equal(a[0][0], test[0][0])


def test_labels_size_and_range(root):
    for size in (32, 64):
        ds = FashionComposites(root, image_size=size)
        labels = FashionMNIST(root, "train").labels
        assert len(ds) == N and ds.num_classes == 10
        for i in range(N):
            x, y = ds[i]
            assert y == labels[i]
            assert x.shape == (3, size, size) and x.dtype == torch.float32
            assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0


def test_train_and_test_photographs_are_disjoint():
    assert not set(TRAIN_BACKGROUNDS) & set(TEST_BACKGROUNDS)
    assert len(TRAIN_BACKGROUNDS) == len(TEST_BACKGROUNDS) == 8


def test_split_and_backgrounds_choose_the_photographs(root):
    assert FashionComposites(root, "train").photographs == TRAIN_BACKGROUNDS
    assert FashionComposites(root, "test").photographs == TEST_BACKGROUNDS
    assert FashionComposites(root, "test", backgrounds="train").photographs == TRAIN_BACKGROUNDS


def test_a_greyed_out_background_leaves_one_garment_box_in_one_colour(root):
    """With background strength 0 every pixel is mid-grey but a square of the garment's side
    (5/8 to 7/8 of the image) inside the image, filled with one colour."""
    ds = FashionComposites(root, background_strength=0.0)
    for i in range(N):
        x = ((ds[i][0] + 1) * 127.5).round().to(torch.int64)  # (3, 32, 32) back to 0..255
        grey = (x == 128).all(0)
        rows, cols = torch.where(~grey)
        if len(rows) == 0:  # the colour drawn happens to be mid-grey: nothing to check
            continue
        h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert h == w and 20 <= h <= 28
        box = x[:, rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        assert (box == box[:, :1, :1]).all()  # one colour


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"split": "val"}, "split must be 'train' or 'test'"),
        ({"backgrounds": "x"}, "backgrounds must be 'train' or 'test'"),
        ({"image_size": 30}, "image_size must be a multiple of 8"),
        ({"background_strength": 1.5}, r"background_strength must be in \[0, 1\]"),
        ({"garment_scale": (0.9, 0.5)}, "garment_scale must be"),
    ],
)
def test_options_out_of_range_are_one_line_naming_them(root, kw, match):
    with pytest.raises(ValueError, match=match):
        FashionComposites(root, **kw)


def test_a_stage_knows_the_options_its_composites_were_made_with(root):
    """A rerun with another background strength, size or seed is another dataset to the
    pipeline's stage ledger (it is refused or redone, never silently kept)."""
    from sfd.experiments.ledger import dataset_settings

    base = dataset_settings(FashionComposites(root))
    assert base == dataset_settings(FashionComposites(root))
    for kw in ({"background_strength": 0.8}, {"image_size": 64}, {"seed": 1}):
        assert dataset_settings(FashionComposites(root, **kw)) != base, kw
