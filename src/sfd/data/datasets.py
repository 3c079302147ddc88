"""Choosing a dataset by name: Fashion-MNIST (:mod:`sfd.data.fashion_mnist`), its garments on
photographs (:mod:`sfd.data.composites`) or an image folder (:mod:`sfd.data.images`); all yield
``(image, label)`` with ``image`` (C, H, W) in [-1, 1]."""

from __future__ import annotations

from pathlib import Path

import torch

from sfd.data.composites import FashionComposites
from sfd.data.fashion_mnist import DEFAULT_ROOT, FashionMNIST
from sfd.data.images import ImageFolder

DATASETS = ("fashion-mnist", "composites", "folder")


def open_dataset(
    dataset: str = "fashion-mnist",
    data_root: str | Path | None = None,
    split: str = "train",
    image_size: int = 32,
    channels: int = 1,
    on_error: str = "raise",
) -> torch.utils.data.Dataset:
    """Fashion-MNIST (``data_root`` defaults to the Debian package's directory; ``split``) or
    an image folder (``data_root`` required; ``on_error``), as (``channels``, ``image_size``,
    ``image_size``) images in [-1, 1]."""
    if dataset == "fashion-mnist":
        return FashionMNIST(data_root or DEFAULT_ROOT, split, image_size, int(channels))
    if dataset == "composites":
        if int(channels) != 3:
            raise ValueError(f"the composites are RGB: channels must be 3; got {channels}")
        return FashionComposites(data_root or DEFAULT_ROOT, split, image_size)
    if dataset == "folder":
        if data_root is None:
            raise ValueError("an image folder dataset needs data_root (--data-root)")
        mode = {1: "L", 3: "RGB"}[int(channels)]
        return ImageFolder(data_root, image_size, on_error=on_error, mode=mode)
    raise ValueError(f"unknown dataset {dataset!r}; expected one of {DATASETS}")
