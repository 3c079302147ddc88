"""Fashion-MNIST (Xiao, Rasul & Vollgraf 2017) from the gzipped IDX files of Debian's
``dataset-fashion-mnist`` package: 60,000 train and 10,000 test 28 x 28 grayscale images in 10
classes, the embedded default dataset of ``sfd`` (installed offline from Debian's
``dataset-fashion-mnist`` package).

IDX format (LeCun et al., http://yann.lecun.com/exdb/mnist/): two zero bytes, a type code
(0x08 = unsigned byte), the number of dimensions, then each dimension as a big-endian uint32,
then the data in row-major order. Files may be gzipped (``.gz``) or raw.

Images are resized from 28 x 28 with PIL's bicubic filter (default 32 x 32), mapped to
[-1, 1] and returned with 1 channel or replicated to 3.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sfd.data.images import hflip, to_tensor

DEFAULT_ROOT = Path("/usr/share/datasets/fashion-mnist")
CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file of unsigned bytes (gzipped or raw) into a uint8 array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    if data[2] != 0x08:
        raise ValueError(
            f"{path}: IDX type code {data[2]:#04x} is not supported; expected 0x08 (unsigned byte)"
        )
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path} is truncated (IDX header)")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = int(np.prod(shape))
    if len(data) - header != expected:
        raise ValueError(
            f"{path}: IDX data has {len(data) - header} bytes; the header "
            f"{tuple(shape)} needs {expected}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _find(root: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (root / name).exists():
            return root / name
    raise FileNotFoundError(
        f"Fashion-MNIST file {stem}.gz not found in {root}. Install the Debian package with "
        f"`apt-get update && apt-get install -y dataset-fashion-mnist` (it puts the IDX files "
        f"in {DEFAULT_ROOT}) or pass the directory holding them."
    )


class FashionMNIST(torch.utils.data.Dataset):
    """Fashion-MNIST ``split`` ("train" or "test") as ``(image (C, size, size) in [-1, 1],
    label)``.

    Args:
        root: directory with the IDX files (default: the Debian package's).
        split: ``"train"`` (60,000) or ``"test"`` (10,000).
        size: output height and width; 28 returns the original pixels.
        channels: 1 (grayscale) or 3 (grayscale replicated).
        flip: return the horizontally flipped image.
    """

    classes = CLASSES

    def __init__(
        self,
        root: str | Path = DEFAULT_ROOT,
        split: str = "train",
        size: int = 32,
        channels: int = 1,
        flip: bool = False,
    ) -> None:
        if split not in _FILES:
            raise ValueError(f"split must be one of {tuple(_FILES)}; got {split!r}")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3; got {channels}")
        if size < 1:
            raise ValueError(f"size must be >= 1; got {size}")
        root = Path(root)
        images = read_idx(_find(root, _FILES[split][0]))
        labels = read_idx(_find(root, _FILES[split][1]))
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(
                f"Fashion-MNIST {split} files in {root} disagree: images "
                f"{images.shape}, labels {labels.shape}"
            )
        self.images, self.labels = images, labels.astype(np.int64)
        self.split, self.size, self.channels, self.flip = split, size, channels, flip

    @property
    def num_classes(self) -> int:
        return len(CLASSES)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = Image.fromarray(self.images[index])  # uint8 (28, 28) -> mode "L"
        if image.size != (self.size, self.size):
            image = image.resize((self.size, self.size), resample=Image.BICUBIC)
        tensor = to_tensor(image)  # (1, H, W)
        if self.channels == 3:
            tensor = tensor.expand(3, -1, -1).contiguous()
        return (hflip(tensor) if self.flip else tensor), int(self.labels[index])
