"""Reading and writing images: folders with the ADM centre crop, mapped to float [-1, 1] CHW
tensors, and lossless PNG / ADM ``.npz`` files (end of the module).

The crop is the one of ADM (Dhariwal & Nichol 2021, ``guided_diffusion/image_datasets.py``,
``center_crop_arr``), used by DiT, LightningDiT and SFD for ImageNet: while the short side is
at least twice the target, box-downsample by 2; then a bicubic resize so the short side equals
the target; then a centre crop.

Layout: ``root/<class>/<image>`` (the ImageNet ``train`` layout); class folders sorted by name
give the label indices. Bad files (unreadable, truncated, not an image) follow ``on_error``:

- ``"raise"``: ``__getitem__`` raises :class:`BadImageError` naming the file (and the option
  that skips such files).
- ``"skip"``: ``__getitem__`` returns ``None``, logging one warning per file per process (not
  one per epoch); :func:`collate_images` drops such items and the dataset lists the files
  skipped in this process in ``skipped``. Consumers
  that need the count across DataLoader workers compare the batch sizes with the requested
  indices (as :mod:`sfd.extract` does).

Both datasets of :mod:`sfd.data` yield ``(image, label)`` with ``image`` a (C, H, W) float32
tensor in [-1, 1].
"""

from __future__ import annotations

import logging
import os
import zipfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sfd.errors import WRITE_ERRNOS, BadInputError, write_failed

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".ppm")
ON_ERROR = ("skip", "raise")
# one help text for the --on-error option of every command that reads image files
ON_ERROR_HELP = "Unreadable image files: stop with an error naming the file, or skip them."
SKIP_HINT = "pass --on-error skip (on_error='skip') to skip unreadable files"


class BadImageError(BadInputError):
    """An image file that cannot be decoded (unreadable, truncated or not an image)."""


def adm_center_crop(image: Image.Image, size: int) -> Image.Image:
    """The ADM centre crop of ``image`` to ``size`` x ``size`` (see the module docstring)."""
    if size < 1:
        raise ValueError(f"crop size must be >= 1; got {size}")
    while min(image.size) >= 2 * size:
        image = image.resize(tuple(x // 2 for x in image.size), resample=Image.BOX)
    scale = size / min(image.size)
    image = image.resize(tuple(round(x * scale) for x in image.size), resample=Image.BICUBIC)
    left = (image.size[0] - size) // 2
    top = (image.size[1] - size) // 2
    return image.crop((left, top, left + size, top + size))


def to_tensor(image: Image.Image | np.ndarray) -> torch.Tensor:
    """A uint8 PIL image or (H, W[, C]) array -> float32 (C, H, W) tensor in [-1, 1]."""
    array = np.array(image)  # a writable copy
    if array.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image; got dtype {array.dtype}")
    if array.ndim == 2:
        array = array[:, :, None]
    tensor = torch.from_numpy(array.transpose(2, 0, 1).copy())  # (C, H, W)
    return tensor.float() / 127.5 - 1.0


def hflip(images: torch.Tensor) -> torch.Tensor:
    """Horizontal flip of (..., H, W) images (the width axis is last)."""
    return images.flip(-1)


# Larger images are refused before decoding (PIL's own decompression-bomb threshold).
MAX_PIXELS = 89_478_485


def load_image(path: Path, mode: str = "RGB") -> Image.Image:
    """Decode ``path`` fully (so truncated files fail here), converted to ``mode``.

    Every decodable mode is converted: palette, CMYK, grayscale and RGBA (alpha dropped) to
    RGB or L; 16- and 32-bit grayscale are scaled to 8 bits (not clipped). Images over
    :data:`MAX_PIXELS` pixels are refused before they are decoded.
    """
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise BadImageError(
                    f"image file {path} is {width} x {height} pixels, over the limit of "
                    f"{MAX_PIXELS}; refused (resize it first)"
                )
            image.load()
            return _to_8bit(image).convert(mode)
    except BadImageError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise BadImageError(f"cannot read image file {path}: {err}") from None


def _to_8bit(image: Image.Image) -> Image.Image:
    """16-bit ("I;16*") and 32-bit ("I") grayscale scaled to 8-bit "L"; others unchanged."""
    if image.mode.startswith("I;16") or image.mode == "I":
        top = 65535.0 if image.mode.startswith("I;16") else float(max(np.asarray(image).max(), 1))
        arr = np.asarray(image, dtype=np.float64) * (255.0 / top)
        return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="L")
    if image.mode == "F":
        arr = np.asarray(image, dtype=np.float64)
        return Image.fromarray(np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8), mode="L")
    return image


def collate_images(batch: list) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ``(image, label)`` items into ``(images (B, C, H, W), labels (B,))``, dropping the
    ``None`` items of skipped bad files. An all-skipped batch gives B = 0."""
    items = [item for item in batch if item is not None]
    if not items:
        return torch.zeros(0), torch.zeros(0, dtype=torch.long)
    images = torch.stack([image for image, _ in items])
    labels = torch.tensor([int(label) for _, label in items], dtype=torch.long)
    return images, labels


def first_image_shape(dataset) -> tuple[int, ...]:
    """(C, H, W) of the first readable image of a dataset of ``(image, label)`` items."""
    for i in range(len(dataset)):
        item = dataset[i]
        if item is not None:
            return tuple(item[0].shape)
    raise ValueError("the dataset has no readable image")


class ImageFolder(torch.utils.data.Dataset):
    """Class-subfolder image dataset with the ADM centre crop to ``size``, in [-1, 1].

    Args:
        root: directory holding one sub-directory per class (sorted names -> labels 0, 1, ...).
        size: output height and width in pixels.
        flip: return the horizontally flipped image (deterministic; random flips are the
            training loop's job, with its own generator).
        on_error: ``"raise"`` or ``"skip"`` for undecodable files (module docstring).
        mode: PIL mode the images are converted to (``"RGB"`` or ``"L"``).
    """

    def __init__(
        self,
        root: str | Path,
        size: int,
        flip: bool = False,
        on_error: str = "raise",
        mode: str = "RGB",
    ) -> None:
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}; got {on_error!r}")
        if mode not in ("RGB", "L"):
            raise ValueError(f"mode must be 'RGB' or 'L'; got {mode!r}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder {self.root} does not exist")
        self.size, self.flip, self.on_error, self.mode = size, flip, on_error, mode
        self.classes = sorted(p.name for p in self.root.iterdir() if p.is_dir())
        if not self.classes:
            raise ValueError(
                f"{self.root} has no class sub-directories; expected the "
                f"ImageNet layout root/<class>/<image>"
            )
        self.samples: list[tuple[Path, int]] = []
        for label, name in enumerate(self.classes):
            files = sorted(
                p
                for p in (self.root / name).rglob("*")
                if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
            )
            self.samples.extend((p, label) for p in files)
        if not self.samples:
            raise ValueError(
                f"{self.root} has no image files with extensions {', '.join(IMAGE_EXTENSIONS)}"
            )
        self.skipped: list[Path] = []

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return 3 if self.mode == "RGB" else 1

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int] | None:
        path, label = self.samples[index]
        try:
            image = load_image(path, self.mode)
        except BadImageError as err:
            if self.on_error == "raise":
                raise BadImageError(f"{err}; {SKIP_HINT}") from err
            if path not in self.skipped:
                log.warning("skipping %s", err)
                self.skipped.append(path)
            return None
        tensor = to_tensor(adm_center_crop(image, self.size))
        return (hflip(tensor) if self.flip else tensor), label


# ---------------------------------------------------------------------------------------------
# Lossless image files and ADM-style ``.npz`` batches, written atomically and streamed. The ADM
# evaluator reads ``arr_0``: uint8 images (N, H, W, C). ``write_npz_streaming`` writes it image
# by image into the zip archive (numpy's ``.npy`` format inside), so 50K images at 256 px never
# need to be in memory at once.


def write_png(path: Path, image: torch.Tensor | np.ndarray) -> None:
    """uint8 (H, W, C) with C in {1, 3} -> PNG, atomically (temp file + rename)."""
    arr = np.asarray(image.numpy() if isinstance(image, torch.Tensor) else image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] not in (1, 3):
        raise ValueError(f"image must be uint8 (H, W, 1|3); got {arr.dtype} {arr.shape}")
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr).save(tmp, format="PNG")
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise write_failed(path, err, "no partial file was left") from err
        raise


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
    try:
        _write_npz(tmp, images, shape, labels)
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError) and err.errno in WRITE_ERRNOS:  # not an image read
            raise write_failed(path, err, "no partial file was left") from err
        raise


def _write_npz(tmp: Path, images, shape: tuple[int, ...], labels) -> None:
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
