"""Lazy, index-addressable sources of uint8 RGB images for the evaluator.

An :class:`ImageSource` has a length and ``read(start, stop) -> (n, H, W, 3) uint8`` (NHWC,
the ADM ``.npz`` convention). Sources: in-memory arrays/tensors, ``.npz`` files (``arr_0``,
memory-mapped when stored uncompressed as ``np.savez`` writes it, streamed like ADM's
``StreamingNpzArrayReader`` when compressed), and folders of PNG/JPEG files.
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from sfd.data.images import ON_ERROR, SKIP_HINT, BadImageError, adm_center_crop, load_image

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@runtime_checkable
class ImageSource(Protocol):
    name: str

    def __len__(self) -> int: ...

    def read(self, start: int, stop: int) -> np.ndarray: ...


def _check_images(name: str, shape: tuple, dtype) -> None:
    if dtype != np.uint8 or len(shape) != 4 or shape[-1] not in (1, 3):
        raise ValueError(
            f"{name}: expected uint8 images of shape (N, H, W, 3) (or (N, H, W, 1) grayscale), "
            f"got {dtype} {tuple(shape)}"
        )


class ArrayImages:
    """Images already in memory: numpy or torch, uint8, (N, H, W, 3) or (N, 3, H, W)."""

    def __init__(self, images: np.ndarray | torch.Tensor, name: str = "<array>"):
        arr = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else images
        arr = np.asarray(arr)
        if arr.ndim == 4 and arr.shape[1] == 3 and arr.shape[-1] != 3:
            arr = arr.transpose(0, 2, 3, 1)  # NCHW -> NHWC
        _check_images(name, arr.shape, arr.dtype)
        self.array, self.name = arr, name

    def __len__(self) -> int:
        return len(self.array)

    def read(self, start: int, stop: int) -> np.ndarray:
        return np.ascontiguousarray(self.array[start:stop])


class NpzImages:
    """``key`` (default ``arr_0``) of an ``.npz`` file, read lazily."""

    def __init__(self, path: str | Path, key: str = "arr_0"):
        self.path, self.key, self.name = Path(path), key, f"{path}[{key}]"
        with zipfile.ZipFile(self.path) as zf:
            member = f"{key}.npy"
            if member not in zf.namelist():
                raise ValueError(f"{self.path}: no '{key}' array (has {sorted(zf.namelist())})")
            info = zf.getinfo(member)
            with zf.open(member) as f:
                self.shape, self.dtype, fortran, header_len = _read_npy_header(f)
        _check_images(self.name, self.shape, self.dtype)
        if fortran:
            raise ValueError(f"{self.name}: Fortran-ordered arrays are not supported")
        self._memmap = None
        if info.compress_type == zipfile.ZIP_STORED:
            offset = _member_data_offset(self.path, info) + header_len
            self._memmap = np.memmap(self.path, np.uint8, "r", offset, self.shape)
        self._stream, self._pos = None, 0

    def __len__(self) -> int:
        return self.shape[0]

    def read(self, start: int, stop: int) -> np.ndarray:
        stop = min(stop, len(self))
        if self._memmap is not None:
            return np.array(self._memmap[start:stop])
        if self._stream is None or start < self._pos:
            self._open_stream()
        row = int(np.prod(self.shape[1:]))
        while self._pos < start:  # skip rows owned by earlier batches or ranks
            n = min(start - self._pos, 256)
            self._read_exact(n * row)
            self._pos += n
        data = self._read_exact((stop - start) * row)
        self._pos = stop
        return np.frombuffer(bytearray(data), np.uint8).reshape(stop - start, *self.shape[1:])

    def _open_stream(self) -> None:
        self.close()
        self._zip = zipfile.ZipFile(self.path)
        self._stream = self._zip.open(f"{self.key}.npy")
        _read_npy_header(self._stream)
        self._pos = 0

    def _read_exact(self, size: int) -> bytes:
        data = self._stream.read(size)
        if len(data) != size:
            raise ValueError(f"{self.name}: file ended early (wanted {size} bytes)")
        return data

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._zip.close()
            self._stream = None


def _read_npy_header(f) -> tuple[tuple, np.dtype, bool, int]:
    version = np.lib.format.read_magic(f)
    reader = {
        (1, 0): np.lib.format.read_array_header_1_0,
        (2, 0): np.lib.format.read_array_header_2_0,
    }.get(version)
    if reader is None:
        raise ValueError(f"unsupported .npy format version {version}")
    shape, fortran, dtype = reader(f)
    return shape, dtype, fortran, f.tell()


def _member_data_offset(path: Path, info: zipfile.ZipInfo) -> int:
    """File offset of a stored zip member's bytes: after its 30-byte local header + name + extra."""
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        header = f.read(30)
    if header[:4] != b"PK\x03\x04":
        raise ValueError(f"{path}: corrupt zip local header for {info.filename}")
    name_len = int.from_bytes(header[26:28], "little")
    extra_len = int.from_bytes(header[28:30], "little")
    return info.header_offset + 30 + name_len + extra_len


class FolderImages:
    """PNG/JPEG files under a folder (recursive, sorted by relative path), read as RGB; with
    ``size``, each resized and centre-cropped to ``size`` x ``size`` (the ADM crop, as the
    pipeline reads its images), so a folder of mixed sizes can be read.

    ``on_error="raise"``: an unreadable file stops the read with a :class:`BadImageError`
    naming it; ``"skip"``: every file is decoded once up front and the unreadable ones are
    left out (one warning each)."""

    def __init__(self, root: str | Path, on_error: str = "raise", size: int | None = None):
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}; got {on_error!r}")
        self.root, self.name, self.size = Path(root), str(root), size
        self.files = sorted(
            (p for p in self.root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES),
            key=lambda p: p.relative_to(self.root).as_posix(),
        )
        if on_error == "skip":
            self.files = [p for p in self.files if _readable(p)]
        if not self.files:
            readable = "readable " if on_error == "skip" else ""
            raise ValueError(f"{root}: no {readable}{'/'.join(IMAGE_SUFFIXES)} images found")

    def __len__(self) -> int:
        return len(self.files)

    def read(self, start: int, stop: int) -> np.ndarray:
        images = []
        for path in self.files[start:stop]:
            try:
                image = load_image(path, "RGB")
            except BadImageError as err:
                raise BadImageError(f"{err}; {SKIP_HINT}") from err
            images.append(
                np.asarray(image if self.size is None else adm_center_crop(image, self.size))
            )
            if images[-1].shape != images[0].shape:
                raise ValueError(
                    f"{path}: size {images[-1].shape} differs from {images[0].shape} of "
                    f"{self.files[start]}; images in a folder must share one size, or be "
                    "resized and centre-cropped to one (sfd eval --image-size)"
                )
        return np.stack(images)


def _readable(path: Path) -> bool:
    try:
        load_image(path, "RGB")
    except BadImageError as err:
        log.warning("skipping %s", err)
        return False
    return True


def open_images(images, on_error: str = "raise", size: int | None = None) -> ImageSource:
    """An :class:`ImageSource` for an existing source, an array/tensor, a folder (unreadable
    files follow ``on_error``; ``size``: resized and centre-cropped, see
    :class:`FolderImages`), or an .npz."""
    if isinstance(images, ImageSource) and not isinstance(images, (np.ndarray, torch.Tensor)):
        return images
    if isinstance(images, (np.ndarray, torch.Tensor)):
        return ArrayImages(images)
    path = Path(images)
    if path.is_dir():
        return FolderImages(path, on_error, size)
    if path.is_file() and path.suffix == ".npz":
        return NpzImages(path)
    if not path.exists():
        raise ValueError(f"{path} does not exist (expected an .npz of images or an image folder)")
    raise ValueError(f"{path}: expected an .npz file with 'arr_0' images or a folder of images")
