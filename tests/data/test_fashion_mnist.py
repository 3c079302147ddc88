"""Fashion-MNIST: IDX parsing on tiny written files, the missing-file message, the real set."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

from sfd.data.fashion_mnist import DEFAULT_ROOT, FashionMNIST, read_idx


def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write_split(root, split: str, images: np.ndarray, labels: np.ndarray, gz: bool = True):
    prefix = "train" if split == "train" else "t10k"
    for name, array in (
        (f"{prefix}-images-idx3-ubyte", images),
        (f"{prefix}-labels-idx1-ubyte", labels),
    ):
        data = _idx_bytes(array)
        if gz:
            (root / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (root / name).write_bytes(data)


@pytest.fixture
def tiny_root(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    _write_split(tmp_path, "train", images, np.array([0, 1, 2, 9, 4]))
    _write_split(tmp_path, "test", images[:2], np.array([3, 3]), gz=False)
    return tmp_path, images


def test_read_idx_round_trip(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a").write_bytes(_idx_bytes(array))
    (tmp_path / "a.gz").write_bytes(gzip.compress(_idx_bytes(array)))
    assert np.array_equal(read_idx(tmp_path / "a"), array)
    assert np.array_equal(read_idx(tmp_path / "a.gz"), array)


def test_read_idx_rejects_bad_files(tmp_path):
    (tmp_path / "magic").write_bytes(b"\x01\x00\x08\x01" + struct.pack(">I", 1) + b"\x00")
    (tmp_path / "short").write_bytes(_idx_bytes(np.zeros((4,), np.uint8))[:-1])
    (tmp_path / "type").write_bytes(b"\x00\x00\x0d\x01" + struct.pack(">I", 1) + b"\x00" * 4)
    with pytest.raises(ValueError, match="magic"):
        read_idx(tmp_path / "magic")
    with pytest.raises(ValueError, match="needs 4"):
        read_idx(tmp_path / "short")
    with pytest.raises(ValueError, match="type code"):
        read_idx(tmp_path / "type")


def test_tiny_set_sizes_range_and_channels(tiny_root):
    root, images = tiny_root
    train = FashionMNIST(root, "train")
    assert len(train) == 5 and train.num_classes == 10
    x, y = train[3]
    assert x.shape == (1, 32, 32) and x.dtype == torch.float32 and y == 9
    assert x.min() >= -1 and x.max() <= 1
    raw, _ = FashionMNIST(root, "train", size=28)[1]
    assert torch.equal(((raw[0] + 1) * 127.5).round(), torch.from_numpy(images[1]).float())
    rgb, _ = FashionMNIST(root, "train", size=16, channels=3)[0]
    assert rgb.shape == (3, 16, 16) and torch.equal(rgb[0], rgb[2])
    flipped, _ = FashionMNIST(root, "train", flip=True)[0]
    assert torch.equal(flipped, train[0][0].flip(-1))
    assert len(FashionMNIST(root, "test")) == 2  # raw (not gzipped) files are read too


def test_missing_files_say_how_to_install(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install -y dataset-fashion-mnist"):
        FashionMNIST(tmp_path, "train")


def test_bad_arguments_are_named(tiny_root):
    root, _ = tiny_root
    with pytest.raises(ValueError, match="split"):
        FashionMNIST(root, "val")
    with pytest.raises(ValueError, match="channels"):
        FashionMNIST(root, channels=2)


@pytest.mark.skipif(
    not (DEFAULT_ROOT / "t10k-images-idx3-ubyte.gz").exists(),
    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)",
)
def test_real_files():
    test = FashionMNIST(split="test")
    assert len(test) == 10_000 and len(FashionMNIST(split="train")) == 60_000
    assert np.bincount(test.labels).tolist() == [1000] * 10
    x, _ = test[0]
    assert x.shape == (1, 32, 32) and x.min() == -1
