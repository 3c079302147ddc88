"""Image folders: the ADM centre crop, flips, [-1, 1] tensors and the bad-file policies."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from sfd.data.datasets import open_dataset
from sfd.data.images import (
    BadImageError,
    ImageFolder,
    adm_center_crop,
    collate_images,
    hflip,
    to_tensor,
)


def _square_image(width: int, height: int, side: int) -> Image.Image:
    """White RGB canvas with a black side x side square at its centre."""
    canvas = np.full((height, width, 3), 255, np.uint8)
    top, left = (height - side) // 2, (width - side) // 2
    canvas[top : top + side, left : left + side] = 0
    return Image.fromarray(canvas)


@pytest.mark.parametrize("size", [(300, 200), (200, 300), (64, 64), (50, 40), (1000, 257)])
def test_adm_crop_gives_the_target_size(size):
    out = adm_center_crop(Image.new("RGB", size, (10, 20, 30)), 32)
    assert out.size == (32, 32)
    assert np.asarray(out)[16, 16].tolist() == [10, 20, 30]


def test_adm_crop_keeps_a_centred_square_centred():
    # 1024 x 512 -> box /2 three times -> 128 x 64 -> centre crop: the square lands exactly.
    out = np.asarray(adm_center_crop(_square_image(1024, 512, 256), 64).convert("L"))
    expected = np.zeros((64, 64), bool)
    expected[16:48, 16:48] = True
    assert np.array_equal(out < 128, expected)
    # 1024 x 768 -> 256 x 192 -> bicubic 85 x 64 -> crop: centred within half a pixel.
    out = np.asarray(adm_center_crop(_square_image(1024, 768, 384), 64).convert("L"))
    rows, cols = np.nonzero(out < 128)
    assert rows.mean() == pytest.approx(31.5, abs=0.5)
    assert cols.mean() == pytest.approx(31.5, abs=0.5)
    assert 32 * 32 * 0.8 < rows.size < 32 * 32 * 1.2  # 384 / 768 of the short side: half


def test_adm_crop_uses_box_downsampling_while_twice_the_target():
    # A 1-px checkerboard averages to grey under box filters; bicubic alone would alias.
    board = (np.indices((256, 256)).sum(0) % 2 * 255).astype(np.uint8)
    out = np.asarray(adm_center_crop(Image.fromarray(board), 64))
    assert np.abs(out.astype(int) - 127.5).max() <= 1


def test_to_tensor_range_layout_and_flip():
    array = np.array([[[0, 255, 0], [255, 0, 255]]], np.uint8)  # (H=1, W=2, C=3)
    x = to_tensor(array)
    assert x.shape == (3, 1, 2) and x.dtype == torch.float32
    assert x[:, 0, 0].tolist() == [-1.0, 1.0, -1.0]
    assert torch.equal(hflip(x)[:, 0, 0], x[:, 0, 1])
    assert torch.equal(hflip(hflip(x)), x)
    with pytest.raises(ValueError, match="uint8"):
        to_tensor(np.zeros((2, 2), np.float32))


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("b_dog", "a_cat"):
        (tmp_path / cls).mkdir()
        for i in range(2):
            pixels = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / cls / f"{i}.png")
    return tmp_path


def test_image_folder_labels_shapes_and_flip(folder):
    data = ImageFolder(folder, 16)
    flipped = ImageFolder(folder, 16, flip=True)
    assert data.classes == ["a_cat", "b_dog"] and data.num_classes == 2 and len(data) == 4
    labels = [data[i][1] for i in range(4)]
    assert labels == [0, 0, 1, 1]
    image, _ = data[2]
    assert image.shape == (3, 16, 16) and image.min() >= -1 and image.max() <= 1
    assert torch.equal(flipped[2][0], image.flip(-1))
    gray = ImageFolder(folder, 16, mode="L")
    assert gray[0][0].shape == (1, 16, 16) and gray.channels == 1


def _add_bad_files(folder):
    good = (folder / "a_cat" / "0.png").read_bytes()
    (folder / "a_cat" / "truncated.png").write_bytes(good[: len(good) // 2])
    (folder / "b_dog" / "text.jpg").write_text("not an image")


def test_bad_files_raise_naming_the_file(folder):
    _add_bad_files(folder)
    data = ImageFolder(folder, 16, on_error="raise")
    bad = [i for i, (path, _) in enumerate(data.samples) if path.name == "truncated.png"][0]
    with pytest.raises(BadImageError, match="truncated.png"):
        data[bad]
    loader = DataLoader(data, batch_size=8, collate_fn=collate_images)
    with pytest.raises(BadImageError, match="cannot read image file"):
        next(iter(loader))


def test_bad_files_are_skipped_and_counted(folder):
    _add_bad_files(folder)
    data = ImageFolder(folder, 16, on_error="skip")
    assert len(data) == 6
    images, labels = next(iter(DataLoader(data, batch_size=6, collate_fn=collate_images)))
    assert images.shape == (4, 3, 16, 16) and labels.tolist() == [0, 0, 1, 1]
    assert sorted(p.name for p in data.skipped) == ["text.jpg", "truncated.png"]


def test_collate_of_an_all_skipped_batch_is_empty():
    images, labels = collate_images([None, None])
    assert len(images) == 0 and len(labels) == 0


def test_invalid_arguments_are_named(folder, tmp_path):
    with pytest.raises(ValueError, match="on_error"):
        ImageFolder(folder, 16, on_error="ignore")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageFolder(tmp_path / "missing", 16)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no class sub-directories"):
        ImageFolder(tmp_path / "empty", 16)
    with pytest.raises(ValueError, match="data_root"):
        open_dataset("folder")
    with pytest.raises(ValueError, match="unknown dataset"):
        open_dataset("cifar")
    assert len(open_dataset("folder", folder, image_size=8, channels=3)) == 4
