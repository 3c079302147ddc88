"""Pre-compute what training reads: composite-latent shards and SemVAE feature shards.

For every image and its horizontal flip (view 1) :func:`extract` stores the texture posterior
(mean, std) of the pixel VAE, the semantic posterior (mean, std) of the SemVAE applied to the
frozen-encoder features, the REPA targets (those features, fp16) and the label, in the
``sfd-latents`` format of :mod:`sfd.data.latent_shards` (docs/METHOD.md §2).
:func:`extract_features`
stores the encoder features alone (format ``sfd-features``), the SemVAE's training data.
The encoder map is resized to the texture-latent grid when the two differ (e.g. DINOv2's 16 x 16
tokens for SD-VAE's 32 x 32 latents at 256 px; docs/METHOD.md §2.3).

Shard k holds dataset indices [k * shard_size, (k + 1) * shard_size) minus unreadable images
skipped by the dataset. A shard is written atomically with a hashed sidecar, so a rerun skips
finished shards (verified by hash) and rewrites missing or corrupt ones: a crash loses at most
the shards in progress. Under ``torchrun`` (``torch.distributed`` initialised) rank r takes the
shards with k % world_size == r and rank 0 writes ``meta.json`` after a barrier; a single
process needs no launcher. Models must already be on ``device``.

Format ``sfd-features``: see :mod:`sfd.data.feature_shards`.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import asdict
from functools import partial
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from sfd import distributed
from sfd.data.feature_shards import finalize_feature_set
from sfd.data.images import collate_images, first_image_shape, hflip
from sfd.data.latent_shards import finalize_latent_set, write_latent_shard
from sfd.data.latent_storage import FIRST_LAYOUT, Storage
from sfd.data.shards import finished_shard, write_shard
from sfd.errors import MismatchError
from sfd.latents.encoders import FeatureEncoder, resize_map
from sfd.latents.pca import PCAEncoder
from sfd.latents.repa_targets import check_semvae_storage, stored_pca, write_target_model
from sfd.latents.semvae import SemanticVAE
from sfd.latents.texture import TextureAutoencoder
from sfd.locks import claim_settings

log = logging.getLogger(__name__)

SETTINGS_FILE = "extraction.json"

Batch = dict[str, torch.Tensor]


def both_views(images: torch.Tensor, fn: Callable[[torch.Tensor], Batch]) -> Batch:
    """Apply ``fn`` to the image and its flip in one batch; stack results as (B, 2, ...)."""
    out = fn(torch.cat([images, hflip(images)]))
    b = images.shape[0]
    return {k: v.reshape(2, b, *v.shape[1:]).transpose(0, 1) for k, v in out.items()}


def _batches(
    dataset, indices: range, batch_size: int, num_workers: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    loader = DataLoader(
        Subset(dataset, indices),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate_images,
    )
    for images, labels in loader:
        if len(labels):
            yield images, labels


def run_shards(
    dataset,
    out_dir: Path,
    shard_size: int,
    batch_size: int,
    compute: Callable[[torch.Tensor], Batch],
    write: Callable[[Path, int, Batch], dict],
    finalize: Callable[..., dict],
    settings: dict,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
) -> dict | None:
    """Write every unfinished shard of this rank: ``compute`` on each batch of images and their
    flips (:func:`both_views`), concatenated with the labels, then ``write(out_dir, k,
    tensors)``; after a barrier rank 0 returns ``finalize(num_shards, extra={"extraction":
    settings})`` (other ranks ``None``). ``settings`` must match earlier runs into ``out_dir``."""
    if shard_size < 1 or batch_size < 1:
        raise ValueError(f"shard_size and batch_size must be >= 1; got {shard_size}, {batch_size}")
    if len(dataset) == 0:
        raise ValueError("the dataset is empty")
    _claim(out_dir, settings)
    n, rank, world = len(dataset), distributed.rank(), distributed.world_size()
    num_shards = math.ceil(n / shard_size)
    todo = [k for k in range(rank, num_shards, world) if finished_shard(out_dir, k) is None]
    log.info("rank %d: %d of %d shards to write in %s", rank, len(todo), num_shards, out_dir)
    ranges = {k: range(k * shard_size, min(n, (k + 1) * shard_size)) for k in todo}
    total = sum(len(r) for r in ranges.values())
    with tqdm(total=total, desc=f"extract {out_dir.name}", unit="img", disable=rank != 0) as bar:
        for k, indices in ranges.items():
            parts: list[Batch] = []
            for images, labels in _batches(dataset, indices, batch_size, num_workers):
                with torch.no_grad():
                    out = both_views(images.to(device), compute)
                parts.append({**{key: v.cpu() for key, v in out.items()}, "label": labels})
                bar.update(len(labels))
            write(out_dir, k, _concat(parts, k, indices))
    distributed.barrier()
    meta = finalize(num_shards, extra={"extraction": settings}) if distributed.is_main() else None
    distributed.barrier()
    return meta


def _concat(parts: list[Batch], k: int, indices: range) -> Batch:
    if not parts:
        raise ValueError(
            f"every image of shard {k} (indices {indices.start}...{indices.stop - 1}) "
            f"was unreadable"
        )
    tensors = {key: torch.cat([p[key] for p in parts]) for key in parts[0]}
    if len(tensors["label"]) < len(indices):
        log.warning(
            "shard %d: skipped %d unreadable images", k, len(indices) - len(tensors["label"])
        )
    return tensors


def _claim(out_dir: Path, settings: dict) -> None:
    """Record the settings of the first run into ``out_dir``; refuse a run with others."""
    what, hint = "extracted shards", "write to a new directory or delete the old shards"
    claim_settings(out_dir / SETTINGS_FILE, settings, what, hint, write=distributed.is_main())


def _num_classes(dataset, num_classes: int | None) -> int:
    value = num_classes if num_classes is not None else getattr(dataset, "num_classes", None)
    if value is None:
        raise ValueError("pass num_classes: the dataset has no num_classes attribute")
    return int(value)


# encoder settings that do not change the features (where the weights were read from) or
# that follow the grid, which is checked on its own
_UNCHECKED_ENCODER_KEYS = ("grid", "path", "input_size")


def check_semvae_input(semvae: SemanticVAE, encoder: FeatureEncoder, grid: int, why: str) -> None:
    """Refuse to feed ``semvae`` features it was not trained on: another channel count, another
    grid (``why`` says where the latent grid comes from) or another encoder or encoder setting
    (as recorded by :func:`sfd.training.semvae_fit.train_semvae`)."""
    recorded = getattr(semvae, "trained_on", None)  # a PCA encoder records none
    if semvae.config.in_dim != encoder.dim:
        trained = f" (it was trained on {recorded})" if recorded else ""
        raise MismatchError(
            f"the SemVAE expects {semvae.config.in_dim}-d features{trained}; the encoder "
            f"{encoder.name} gives {encoder.dim}"
        )
    sem_grid = getattr(semvae.config, "grid", None)  # None: any grid (per-position PCA)
    if sem_grid is not None and sem_grid != grid:
        raise MismatchError(
            f"the SemVAE was trained on a {semvae.config.grid}x{semvae.config.grid} feature grid; "
            f"these latents are on a {grid}x{grid} grid ({why}): extract its features with "
            f"--grid {grid} at the same --image-size and retrain it"
        )
    if not hasattr(semvae, "trained_on"):  # a PCA encoder: fitted on features, no record
        return
    trained = recorded
    if trained is None:
        log.warning("the SemVAE records no encoder settings; they cannot be checked")
        return
    now = encoder.describe()
    differ = [
        f"{k}: SemVAE {trained.get(k)!r}, now {now.get(k)!r}"
        for k in sorted(trained.keys() | now.keys())
        if k not in _UNCHECKED_ENCODER_KEYS and trained.get(k) != now.get(k)
    ]
    if differ:
        raise MismatchError(
            f"the SemVAE was trained on features of another encoder setting "
            f"({'; '.join(differ)}); extract with the SemVAE's encoder settings"
        )


def _latent_grid(shape, encoder: FeatureEncoder, texture_ae, semvae: SemanticVAE) -> int:
    """The latent grid of images of ``shape``: the texture autoencoder's; the SemVAE must fit
    the encoder's features on it (the encoder map is resized to it when the two differ)."""
    if shape[-1] % texture_ae.downsample:
        raise ValueError(
            f"image size {shape[-1]} is not divisible by the texture "
            f"autoencoder's downsampling factor {texture_ae.downsample}"
        )
    grid = shape[-1] // texture_ae.downsample
    check_semvae_input(semvae, encoder, grid, f"{shape[-1]} px / f{texture_ae.downsample}")
    if encoder.grid != grid:
        log.info(
            "resizing the %s map from %d to the latent grid %d", encoder.name, encoder.grid, grid
        )
    return grid


def class_names(dataset) -> dict:
    """``{"class_names": [...]}`` where the dataset names its classes (Fashion-MNIST's names, an
    image folder's class folders), recorded in the latent set for runs and exports; else ``{}``."""
    while not hasattr(dataset, "classes") and hasattr(dataset, "dataset"):
        dataset = dataset.dataset  # a torch Subset (the demo's, the pipeline's) of a named set
    names = getattr(dataset, "classes", None)
    return {"class_names": [str(c) for c in names]} if names else {}


def extract(
    dataset,
    encoder: FeatureEncoder,
    texture_ae: TextureAutoencoder,
    semvae: SemanticVAE,
    out_dir: str | Path,
    shard_size: int = 1024,
    batch_size: int = 64,
    repa: bool = True,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
    num_classes: int | None = None,
    settings: dict | None = None,
    storage: Storage = FIRST_LAYOUT,
    repa_pca: PCAEncoder | None = None,
) -> dict | None:
    """Write the ``sfd-latents`` set of ``dataset`` (module docstring) and return its meta
    (``None`` on ranks other than 0). ``settings`` (e.g. model paths) go into
    ``meta["extraction"]`` beside what the models describe about themselves. ``storage``
    (:mod:`sfd.data.latent_storage`); ``repa_pca``: the token PCA of ``pca`` storage."""
    out_dir = Path(out_dir)
    shape = first_image_shape(dataset)
    grid = _latent_grid(shape, encoder, texture_ae, semvae)

    def compute(x: torch.Tensor) -> Batch:
        tex_mean, tex_std = texture_ae.encode(x)
        features = resize_map(encoder.features(x), grid)
        sem_mean, sem_std = semvae.posterior(features)
        out = {"tex_mean": tex_mean, "tex_std": tex_std, "sem_mean": sem_mean, "sem_std": sem_std}
        return {**out, "repa": features.half()} if repa else out

    info = {
        "encoder": encoder.describe(),
        "texture_ae": texture_ae.describe(),
        "semvae": asdict(semvae.config),
        "semvae_encoder": getattr(semvae, "trained_on", None),
        "image_shape": list(shape),
        "dataset_size": len(dataset),
        "shard_size": shard_size,
        "repa": repa,
        **(settings or {}),
    }
    write = _storage_writer(out_dir, info, storage, repa_pca if repa else None, semvae)
    n, names = _num_classes(dataset, num_classes), class_names(dataset)
    finalize = partial(_finalize_latents, out_dir, n, names, storage, repa)
    return run_shards(
        dataset,
        out_dir,
        shard_size,
        batch_size,
        compute,
        write,
        finalize,
        info,
        num_workers,
        device,
    )


def _finalize_latents(out_dir, n, names: dict, storage, repa: bool, num_shards, extra) -> dict:
    """The latent set's meta.json (written last), with the dataset's class names."""
    return finalize_latent_set(
        out_dir, n, num_shards, {**extra, **names}, storage=storage, has_repa=repa
    )


def _storage_writer(
    out_dir: Path, info: dict, storage: Storage, pca: PCAEncoder | None, semvae: SemanticVAE
) -> Callable[[Path, int, Batch], dict]:
    """Claim ``out_dir`` with ``info`` (+ the storage, unless it is the first layout, whose
    settings stay as they were), write the set's PCA or SemVAE copy (rank 0), and return the
    shard writer of ``storage``."""
    repa = info["repa"]
    tensors = stored_pca(storage, pca) if repa else None
    if repa:
        check_semvae_storage(storage, semvae)
    if not storage.legacy:
        info["storage"] = storage.record()
        if tensors is not None:
            info["repa_pca_sha256"] = sha256_tensors(tensors)
    _claim(out_dir, info)
    if repa and distributed.is_main():
        write_target_model(out_dir, storage, pca, semvae)
    return partial(write_latent_shard, storage=storage, pca=tensors)


def extract_features(
    dataset,
    encoder: FeatureEncoder,
    out_dir: str | Path,
    shard_size: int = 1024,
    batch_size: int = 64,
    grid: int | None = None,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
    num_classes: int | None = None,
    settings: dict | None = None,
) -> dict | None:
    """Write the ``sfd-features`` set (encoder maps of both views, resized to ``grid`` if
    given, fp16) that trains the SemVAE; returns its meta on rank 0, else ``None``."""
    out_dir = Path(out_dir)
    grid = grid or encoder.grid

    def compute(x: torch.Tensor) -> Batch:
        return {"features": resize_map(encoder.features(x), grid).half()}

    info = {
        "encoder": encoder.describe(),
        "grid": grid,
        "image_shape": list(first_image_shape(dataset)),
        "dataset_size": len(dataset),
        "shard_size": shard_size,
        **(settings or {}),
    }
    finalize = partial(finalize_feature_set, out_dir, _num_classes(dataset, num_classes))
    return run_shards(
        dataset,
        out_dir,
        shard_size,
        batch_size,
        compute,
        write_shard,
        finalize,
        info,
        num_workers,
        device,
    )


def sha256_tensors(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 of named tensors' bytes, in key order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        h.update(name.encode())
        h.update(tensors[name].contiguous().numpy().tobytes())
    return h.hexdigest()
