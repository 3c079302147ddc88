"""Test stand-ins: a cheap network with the evaluator's interface, and seeded image batches."""

import numpy as np
import torch
import torch.nn.functional as F

from sfd.eval.inception import FIDInceptionV3, InceptionFeatures, as_nchw_uint8


class TinyNet:
    """Deterministic per-image features with ``FIDInceptionV3``'s interface, in microseconds."""

    def __init__(self, seed: int = 0, pool_dim: int = 16, spatial_dim: int = 8, classes: int = 10):
        g = torch.Generator().manual_seed(seed)
        self.pool_proj = torch.randn(48, pool_dim, generator=g)
        self.spatial_proj = torch.randn(48, spatial_dim, generator=g)
        self.fc = torch.randn(classes, pool_dim, generator=g)

    def __call__(self, images: torch.Tensor) -> InceptionFeatures:
        x = as_nchw_uint8(images).float() / 255
        x = F.adaptive_avg_pool2d(x, 4).flatten(1)  # (B, 48)
        return InceptionFeatures(torch.relu(x @ self.pool_proj), x @ self.spatial_proj)

    def logits(self, pool3: torch.Tensor) -> torch.Tensor:
        return pool3 @ self.fc.T


def random_inception(seed: int = 0) -> FIDInceptionV3:
    """A randomly initialised FID Inception whose activations neither vanish nor explode."""
    torch.manual_seed(seed)
    net = FIDInceptionV3()
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    return net


def random_images(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    """(n, size, size, 3) uint8 images with per-image brightness, so features vary."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (n, 1, 1, 3))
    noise = rng.integers(-40, 41, (n, size, size, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)
