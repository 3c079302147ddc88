"""Folders of small synthetic photos for the pipeline tests: each class its own colour and
stripes, each image its own size and noise (no download, no scikit-image)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def photo(width: int, height: int, label: int, seed: int, mode: str = "RGB") -> Image.Image:
    """A ``width`` x ``height`` image: class ``label``'s colour and stripe angle, plus noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    angle = 0.7 * label
    stripes = np.sin(12 * (x * np.cos(angle) + y * np.sin(angle)) + rng.uniform(0, 6))
    colour = np.array([(label * 97) % 256, (label * 57 + 80) % 256, (label * 151 + 160) % 256])
    rgb = colour * (0.6 + 0.4 * stripes[..., None]) + rng.normal(0, 12, (height, width, 3))
    image = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))
    return image.convert(mode)


def image_folder(
    root: Path,
    counts: dict[str, int],
    sizes: tuple[int, int] = (20, 40),
    ext: str = ".png",
    seed: int = 0,
) -> Path:
    """``root/<class>/<i><ext>`` with ``counts[class]`` images of sizes in ``sizes``."""
    rng = np.random.default_rng(seed)
    for label, (name, count) in enumerate(counts.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            w, h = (int(v) for v in rng.integers(sizes[0], sizes[1] + 1, 2))
            photo(w, h, label, int(rng.integers(1 << 30))).save(root / name / f"{i}{ext}")
    return root
