"""Lossless image files and ADM-style ``.npz`` batches, written atomically and streamed.

The ADM evaluator reads ``arr_0``: uint8 images (N, H, W, C). ``write_npz_streaming`` writes
it image by image into the zip archive (numpy's ``.npy`` format inside), so 50K images at 256 px
never need to be in memory at once.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def write_png(path: Path, image: torch.Tensor | np.ndarray) -> None:
    """uint8 (H, W, C) with C in {1, 3} -> PNG, atomically (temp file + rename)."""
    arr = np.asarray(image.numpy() if isinstance(image, torch.Tensor) else image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] not in (1, 3):
        raise ValueError(f"image must be uint8 (H, W, 1|3); got {arr.dtype} {arr.shape}")
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr).save(tmp, format="PNG")
    os.replace(tmp, path)


def read_png(path: Path) -> np.ndarray:
    """PNG -> uint8 (H, W, C)."""
    with Image.open(path) as im:
        arr = np.asarray(im)
    return arr[..., None] if arr.ndim == 2 else arr


def write_npz_streaming(
    path: Path,
    images: Iterable[np.ndarray],
    shape: tuple[int, ...],
    labels: np.ndarray | None = None,
) -> None:
    """Write ``arr_0`` (uint8, ``shape``) from an iterable of images, plus ``arr_1`` labels."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        with zf.open("arr_0.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_1_0(
                f, {"descr": "|u1", "fortran_order": False, "shape": tuple(shape)}
            )
            count = 0
            for img in images:
                arr = np.ascontiguousarray(img, dtype=np.uint8)
                if arr.shape != tuple(shape[1:]):
                    raise ValueError(f"image {count} has shape {arr.shape}; expected {shape[1:]}")
                f.write(arr.tobytes())
                count += 1
            if count != shape[0]:
                raise ValueError(f"wrote {count} images; expected {shape[0]}")
        if labels is not None:
            with zf.open("arr_1.npy", "w") as f:
                np.lib.format.write_array(f, np.asarray(labels, dtype=np.int64))
    os.replace(tmp, path)
