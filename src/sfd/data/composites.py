"""Garments on photographs: a testbed where texture and semantics come apart (docs/ABLATION.md).

On ImageNet the pixel autoencoder's latent is a texture code that carries little of the class,
while the frozen encoder's features carry most of it: the regime where the paper expects the
semantic lead to help most. Fashion-MNIST on a black background is the opposite regime (its
texture latent already carries the class). This dataset moves Fashion-MNIST into the first
regime, offline and deterministically: each garment (its class carried by its shape) is painted
in a random colour, scaled and placed at a random position over a random crop of one of the
natural photographs and textures that scikit-image ships as files (``skimage/data``).

One image, from its own generator (seeded by ``(seed, split, backgrounds, index)``):

- a background photograph drawn from the split's list, a square crop of random side
  (48 px up to the photograph's short side, at most 256 px) at a random place, resized
  (bilinear) to ``image_size``; a grayscale photograph is tinted by a random colour; the
  background is then blended towards mid-grey by ``1 - background_strength``;
- the garment (28 x 28 Fashion-MNIST pixels) resized (bicubic) to a random side in
  ``garment_scale`` x ``image_size``, placed at a random position inside the image, painted
  in a random RGB colour with its own intensity as opacity.

Training and test backgrounds come from disjoint photographs, so a probe that reads the class
off the test images cannot use a background it has seen. A generator's samples are compared
with held-out garments on the *training* photographs (``backgrounds="train"`` on the test
split): the distribution it learned, with garments it has never seen.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sfd.data.fashion_mnist import CLASSES, DEFAULT_ROOT, FashionMNIST
from sfd.data.images import to_tensor

# Photographs and textures bundled with scikit-image (files in its data folder); disjoint.
# A table of the training photographs, four per row:
TRAIN_BACKGROUNDS = (
    "astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg",
    "brick.png", "grass.png", "camera.png", "coins.png",
)  # fmt: skip
# A table of the test photographs, four per row:
TEST_BACKGROUNDS = (
    "hubble_deep_field.jpg", "ihc.png", "gravel.png", "moon.png",
    "page.png", "clock_motion.png", "text.png", "cell.png",
)  # fmt: skip
_SPLIT_CODE = {"train": 0, "test": 1}
_MIN_CROP, _MAX_CROP = 48, 256


def scikit_image_data() -> Path:
    """The folder of scikit-image's bundled data files (no download involved)."""
    try:
        import skimage
    except ImportError:
        raise ValueError(
            "the composites dataset needs scikit-image's bundled photographs: "
            "pip install scikit-image"
        ) from None
    return Path(skimage.__file__).parent / "data"


@functools.lru_cache(maxsize=32)
def _photograph(name: str) -> tuple[np.ndarray, bool]:
    """A bundled photograph as read-only float32 (H, W, 3) in [0, 1] and whether it is
    grayscale (replicated to RGB; tinted when used as a background)."""
    with Image.open(scikit_image_data() / name) as im:
        rgb = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    gray = bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())
    rgb.setflags(write=False)
    return rgb, gray


class FashionComposites(torch.utils.data.Dataset):
    """Fashion-MNIST garments on photographs (module docstring), as ``(image (3, S, S) in
    [-1, 1], label)``.

    Args:
        root: directory of the Fashion-MNIST IDX files (default: the Debian package's).
        split: ``"train"`` or ``"test"``: which garments.
        image_size: output side, a multiple of 8, >= 16.
        background_strength: 1 keeps the photograph; 0 replaces it by mid-grey.
        garment_scale: (low, high) garment side as a fraction of ``image_size``.
        backgrounds: ``"train"`` or ``"test"`` photographs (default: the split's own).
        seed: the dataset's seed; an image is a pure function of (seed, split, backgrounds,
            index) and the options.
    """

    classes = CLASSES

    def __init__(
        self,
        root: str | Path = DEFAULT_ROOT,
        split: str = "train",
        image_size: int = 32,
        background_strength: float = 0.6,
        garment_scale: tuple[float, float] = (0.625, 0.875),
        backgrounds: str | None = None,
        seed: int = 0,
    ) -> None:
        backgrounds = split if backgrounds is None else backgrounds
        for what, value in (("split", split), ("backgrounds", backgrounds)):
            if value not in _SPLIT_CODE:
                raise ValueError(f"composites {what} must be 'train' or 'test'; got {value!r}")
        if image_size < 16 or image_size % 8:
            raise ValueError(
                f"composites image_size must be a multiple of 8, >= 16; got {image_size}"
            )
        if not 0.0 <= background_strength <= 1.0:
            raise ValueError(
                f"composites background_strength must be in [0, 1]; got {background_strength}"
            )
        low, high = (float(v) for v in garment_scale)
        if not 0.0 < low <= high <= 1.0:
            raise ValueError(
                f"composites garment_scale must be (low, high) with 0 < low <= high <= 1; "
                f"got {tuple(garment_scale)}"
            )
        self.garments = FashionMNIST(root, split, size=28, channels=1)
        self.labels = self.garments.labels
        self.split, self.backgrounds, self.seed = split, backgrounds, int(seed)
        self.image_size, self.background_strength = int(image_size), float(background_strength)
        self.garment_scale = (low, high)
        self.photographs = TRAIN_BACKGROUNDS if backgrounds == "train" else TEST_BACKGROUNDS

    @property
    def num_classes(self) -> int:
        return len(CLASSES)

    def __len__(self) -> int:
        return len(self.labels)

    def describe(self) -> dict:
        """The options an image depends on (recorded by the experiments that use it)."""
        return {
            "name": "composites",
            "split": self.split,
            "backgrounds": self.backgrounds,
            "image_size": self.image_size,
            "background_strength": self.background_strength,
            "garment_scale": list(self.garment_scale),
            "seed": self.seed,
        }

    def rng(self, index: int) -> np.random.Generator:
        key = (self.seed, _SPLIT_CODE[self.split], _SPLIT_CODE[self.backgrounds], int(index))
        return np.random.default_rng(key)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} composites")
        rng = self.rng(index)
        background = self._background(rng)
        garment = self._garment(index, rng)  # (S, S) opacity in [0, 1], placed
        colour = rng.uniform(0.0, 1.0, size=3).astype(np.float32)
        alpha = garment[..., None]
        image = background * (1.0 - alpha) + colour * alpha  # (S, S, 3) in [0, 1]
        pil = Image.fromarray(np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8), "RGB")
        return to_tensor(pil), int(self.labels[index])

    def _background(self, rng: np.random.Generator) -> np.ndarray:
        photo, gray = _photograph(self.photographs[int(rng.integers(len(self.photographs)))])
        h, w = photo.shape[:2]
        top_side = min(_MAX_CROP, h, w)
        side = int(rng.integers(min(_MIN_CROP, top_side), top_side + 1))
        y, x = int(rng.integers(h - side + 1)), int(rng.integers(w - side + 1))
        crop = np.asarray(photo[y : y + side, x : x + side], dtype=np.float32)
        size = self.image_size
        crop = np.stack(
            [
                np.asarray(Image.fromarray(crop[..., c], "F").resize((size, size), Image.BILINEAR))
                for c in range(3)
            ],
            axis=-1,
        )
        tint = rng.uniform(0.3, 1.0, size=3).astype(np.float32)
        if gray:
            crop = crop * tint
        s = self.background_strength
        return np.clip(s * crop + (1.0 - s) * 0.5, 0.0, 1.0)

    def _garment(self, index: int, rng: np.random.Generator) -> np.ndarray:
        size = self.image_size
        low, high = self.garment_scale
        side = int(rng.integers(round(low * size), round(high * size) + 1))
        pixels = Image.fromarray(self.garments.images[index])
        small = np.asarray(pixels.resize((side, side), Image.BICUBIC), dtype=np.float32) / 255.0
        y, x = int(rng.integers(size - side + 1)), int(rng.integers(size - side + 1))
        canvas = np.zeros((size, size), dtype=np.float32)
        canvas[y : y + side, x : x + side] = np.clip(small, 0.0, 1.0)
        return canvas
