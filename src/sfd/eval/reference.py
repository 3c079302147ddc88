"""Reference batches: what the samples are compared against.

:func:`load_reference` accepts

* an ADM reference batch ``.npz`` (e.g. ``VIRTUAL_imagenet256_labeled.npz``): ``arr_0`` uint8
  images (N, H, W, 3) and/or precomputed ``mu``, ``sigma`` (pool3) and ``mu_s``, ``sigma_s``
  (spatial). As in ADM's ``Evaluator.read_statistics``, stored statistics are used for
  FID/sFID when present; the images are still needed for precision/recall;
* an ``.npz`` holding only ``arr_0`` images, or a folder of PNG/JPEG images;
* a ``.safetensors`` statistics file written by :func:`compute_reference_stats`.

The statistics file (format ``sfd.eval.reference/v1``): float64 tensors ``mu`` (2048,),
``sigma`` (2048, 2048), ``mu_s`` (2023,), ``sigma_s`` (2023, 2023), optionally float32
``pool_features`` (N, 2048) for precision/recall; metadata ``format``, ``network``
(``inception-2015-12-05``), ``num_images`` and ``source``.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

from sfd.data.tensor_files import atomic_save_safetensors
from sfd.distributed import rank_and_world
from sfd.eval.features import InceptionLike, compute_inception_features
from sfd.eval.sources import FolderImages, ImageSource, NpzImages, open_images
from sfd.eval.stats import FeatureStats

STATS_FORMAT = "sfd.eval.reference/v1"
NETWORK = "inception-2015-12-05"


@dataclass
class Reference:
    """Whatever is known about a reference set; missing parts are computed from ``images``."""

    name: str
    images: ImageSource | None = None
    pool: FeatureStats | None = None
    spatial: FeatureStats | None = None
    pool_features: np.ndarray | None = None  # (N, 2048) float32
    count: int | None = None  # number of images the statistics came from, if recorded

    @property
    def num_images(self) -> int | None:
        if self.images is not None:
            return len(self.images)
        if self.pool_features is not None:
            return len(self.pool_features)
        return self.count


def load_reference(path) -> Reference:
    """A :class:`Reference` from an ADM ``.npz``, an image ``.npz``/folder, or a stats file.

    Also accepts a :class:`Reference`, an :class:`ImageSource`, or a uint8 image array/tensor.
    """
    if isinstance(path, Reference):
        return path
    if isinstance(path, (np.ndarray, torch.Tensor, ImageSource)):
        source = open_images(path)
        return Reference(source.name, images=source)
    path = Path(path)
    if not path.exists():
        raise ValueError(f"reference {path} does not exist")
    if path.is_dir():
        return Reference(str(path), images=FolderImages(path))
    if path.suffix == ".safetensors":
        return _load_stats_file(path)
    if path.suffix == ".npz":
        return _load_npz(path)
    raise ValueError(
        f"reference {path}: expected an .npz (ADM reference batch or arr_0 images), "
        "an image folder, or a .safetensors file from `sfd ref-stats`"
    )


def _load_npz(path: Path) -> Reference:
    with zipfile.ZipFile(path) as zf:
        keys = {n.removesuffix(".npy") for n in zf.namelist()}
    ref = Reference(str(path))
    if "arr_0" in keys:
        ref.images = NpzImages(path)
    with np.load(path) as npz:
        if "mu" in keys:
            ref.pool = _stats_from(path, npz, "mu", "sigma")
        if "mu_s" in keys:
            ref.spatial = _stats_from(path, npz, "mu_s", "sigma_s")
    if ref.images is None and ref.pool is None:
        raise ValueError(
            f"{path}: has neither 'arr_0' images nor 'mu'/'sigma' (has {sorted(keys)})"
        )
    return ref


def _stats_from(path: Path, arrays, mu_key: str, sigma_key: str) -> FeatureStats:
    if sigma_key not in arrays:
        raise ValueError(f"{path}: has '{mu_key}' but no '{sigma_key}'")
    try:
        return FeatureStats(arrays[mu_key], arrays[sigma_key])
    except ValueError as e:
        raise ValueError(f"{path}: '{mu_key}'/'{sigma_key}': {e}") from e


def _load_stats_file(path: Path) -> Reference:
    with safe_open(path, framework="np") as f:
        meta = f.metadata() or {}
        if meta.get("format") != STATS_FORMAT:
            raise ValueError(
                f"{path}: not an sfd reference statistics file "
                f"(metadata format {meta.get('format')!r}, expected {STATS_FORMAT!r})"
            )
        arrays = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no iter)
    missing = {"mu", "sigma", "mu_s", "sigma_s"} - arrays.keys()
    if missing:
        raise ValueError(f"{path}: missing tensors {sorted(missing)}")
    return Reference(
        name=meta.get("source", str(path)),
        pool=_stats_from(path, arrays, "mu", "sigma"),
        spatial=_stats_from(path, arrays, "mu_s", "sigma_s"),
        pool_features=arrays.get("pool_features"),
        count=int(meta["num_images"]) if "num_images" in meta else None,
    )


def compute_reference_stats(
    images,
    out: str | Path,
    *,
    feature_net: InceptionLike,
    batch_size: int = 250,
    device="cpu",
    keep_features: bool = True,
    progress: bool = False,
) -> Reference:
    """Inception statistics of ``images``, written (by rank 0) to ``out`` as ``.safetensors``.

    ``keep_features`` also stores the (N, 2048) pool3 vectors so precision/recall can later
    be computed without the images.
    """
    out = Path(out)
    if out.suffix != ".safetensors":
        raise ValueError(f"output {out}: the statistics file must end in .safetensors")
    source = open_images(images)
    result = compute_inception_features(
        source, feature_net, batch_size=batch_size, device=device, progress=progress
    )
    ref = Reference(
        source.name,
        pool=result.pool.to_feature_stats(),
        spatial=result.spatial.to_feature_stats(),
        pool_features=result.pool_features.numpy() if keep_features else None,
    )
    if rank_and_world()[0] == 0:
        _save_stats_file(ref, out, num_images=len(source))
    return ref


def _save_stats_file(ref: Reference, out: Path, num_images: int) -> None:
    tensors = {
        "mu": torch.from_numpy(ref.pool.mu),
        "sigma": torch.from_numpy(ref.pool.sigma),
        "mu_s": torch.from_numpy(ref.spatial.mu),
        "sigma_s": torch.from_numpy(ref.spatial.sigma),
    }
    if ref.pool_features is not None:
        tensors["pool_features"] = torch.from_numpy(np.ascontiguousarray(ref.pool_features))
    meta = {
        "format": STATS_FORMAT,
        "network": NETWORK,
        "num_images": str(num_images),
        "source": ref.name,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_save_safetensors(out, tensors, meta)
