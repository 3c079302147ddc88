"""Latent sets derived from an extracted one, for the ablation rows (docs/METHOD.md §7).

:func:`derive_latent_set` copies an ``sfd-latents`` set (:mod:`sfd.data.latent_shards`) shard by
shard, keeping labels, texture posteriors and REPA targets, and replaces the semantic channels:

- ``"none"``: no semantic channels (C_s = 0): texture-only diffusion (the "baseline" and
  "+REPA" rows; train it with ``latent.sem_channels=0``);
- ``"pca"``: the PCA codes (:mod:`sfd.latents.pca`) of the stored REPA targets, the frozen-encoder
  features on the latent grid, with posterior std 0: ReDi's semantic latent (Kouzelis et al.
  2025), the "PCA instead of SemVAE" ablation;
- ``"from"``: the semantic posteriors of another latent set of the same images (``source``:
  the same labels and texture posteriors, e.g. one extracted with another encoder and SemVAE),
  so that only the semantic latent differs between two rows (the random-encoder control).

The new set's ``meta.json`` (written last) carries the base meta's extra keys (extraction
settings, encoder, texture autoencoder) and a ``derived_from`` record: the base directory and a
digest of its shard hashes, the semantic kind and the PCA encoder (directory if it was loaded
from one, and a digest of its buffers). A rerun into a finished set of the same record returns
its meta; a crash loses at most the shard in progress; any other set in ``out_dir`` is an error.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import torch

from sfd.data.latent_shards import (
    COMPUTED_META_KEYS,
    LatentDataset,
    finalize_latent_set,
    write_latent_shard,
)
from sfd.data.shards import finished_shard
from sfd.data.tensor_files import MappedShard, atomic_write_json
from sfd.latents.pca import PCAEncoder

log = logging.getLogger(__name__)

SEMANTIC_KINDS = ("none", "pca", "from")
CLAIM_FILE = "derive.json"
_ENCODE_ROWS = 64  # images PCA-encoded at a time


def pca_digest(pca: PCAEncoder) -> str:
    """sha256 of a PCA encoder's buffers (float64 bytes, in state-dict order)."""
    h = hashlib.sha256()
    for name, value in pca.state_dict().items():
        h.update(name.encode())
        h.update(value.detach().cpu().double().contiguous().numpy().tobytes())
    return h.hexdigest()


def derive_latent_set(
    base_dir: str | Path,
    out_dir: str | Path,
    semantic: str,
    pca: PCAEncoder | None = None,
    source: str | Path | None = None,
) -> dict:
    """Write the latent set ``out_dir`` derived from ``base_dir`` (module docstring) and return
    its meta. ``semantic`` is ``"none"``, ``"pca"`` (needs ``pca``) or ``"from"`` (needs
    ``source``, a latent set of the same images)."""
    if semantic not in SEMANTIC_KINDS:
        raise ValueError(f"semantic must be one of {SEMANTIC_KINDS}; got {semantic!r}")
    if (semantic == "pca") != (pca is not None):
        raise ValueError(f"semantic={semantic!r} {'needs' if pca is None else 'takes no'} pca")
    if (semantic == "from") != (source is not None):
        raise ValueError(
            f"semantic={semantic!r} {'needs' if source is None else 'takes no'} source"
        )
    base, out_dir = LatentDataset(base_dir), Path(out_dir)
    if not base.storage.legacy:
        raise ValueError(f"{base_dir} is stored as {base.storage.spec}; derive from an f32 set")
    other = None if source is None else LatentDataset(source)
    if semantic == "pca":
        _check_pca_source(base, pca)
    if other is not None:
        _check_same_images(base, other)
    record = _record(base, semantic, pca, other)
    done = _claim(out_dir, record)
    if done is not None:
        log.info("%s already holds this derived set; nothing to do", out_dir)
        return done
    for k, info in enumerate(base.meta["shards"]):
        if finished_shard(out_dir, k, verify=True) is not None:
            continue
        shard = MappedShard(base.directory / info["file"])
        sem = None if other is None else MappedShard(other.directory / info["file"])
        write_latent_shard(out_dir, k, _derived_tensors(shard, pca, sem))
        log.info("derived shard %d of %d", k + 1, len(base.meta["shards"]))
    extra = {k: v for k, v in base.meta.items() if k not in COMPUTED_META_KEYS}
    extra["derived_from"] = record
    return finalize_latent_set(out_dir, base.num_classes, len(base.meta["shards"]), extra)


def _check_pca_source(base: LatentDataset, pca: PCAEncoder) -> None:
    """The base set must hold REPA targets on the latent grid, of the PCA's input dim."""
    if not base.has_repa:
        raise ValueError(
            f"{base.directory} holds no REPA targets to PCA-encode; extract it with --repa"
        )
    first = base.shards[0]
    repa, tex = first["repa"].shape, first["tex_mean"].shape
    if repa[3:] != tex[3:]:
        raise ValueError(
            f"{base.directory}: REPA targets are on a {repa[3]}x{repa[4]} grid, the latents on "
            f"{tex[3]}x{tex[4]}; PCA codes need the latent grid"
        )
    if repa[2] != pca.dim:
        raise ValueError(
            f"{base.directory}: REPA targets are {repa[2]}-d; the PCA expects {pca.dim}"
        )


def _check_same_images(base: LatentDataset, other: LatentDataset) -> None:
    """``other`` must hold the same images as ``base``, shard for shard: the same labels and
    the same texture posteriors (bit for bit: the same texture autoencoder on the same data)."""
    files = [info["file"] for info in base.meta["shards"]]
    if [info["file"] for info in other.meta["shards"]] != files or len(other) != len(base):
        raise ValueError(
            f"{other.directory} does not hold the images of {base.directory} "
            f"({len(other)} vs {len(base)} images in {len(other.meta['shards'])} vs "
            f"{len(files)} shards)"
        )
    for name in files:
        a, b = MappedShard(base.directory / name), MappedShard(other.directory / name)
        for key in ("label", "tex_mean"):
            if not np.array_equal(np.asarray(a[key]), np.asarray(b[key])):
                raise ValueError(
                    f"{other.directory}/{name}: its {key} differs from {base.directory}'s; "
                    f"the semantic channels of another set must come from the same images"
                )


def _digest(ds: LatentDataset) -> str:
    return hashlib.sha256("".join(i["sha256"] for i in ds.meta["shards"]).encode()).hexdigest()


def _record(
    base: LatentDataset, semantic: str, pca: PCAEncoder | None, other: LatentDataset | None
) -> dict:
    return {
        "base": str(base.directory.resolve()),
        "base_digest": _digest(base),
        "semantic": semantic,
        "pca_dir": None if pca is None else getattr(pca, "directory", None),
        "pca_digest": None if pca is None else pca_digest(pca),
    } | _source_record(other)


def _source_record(other: LatentDataset | None) -> dict:
    """The latent set a derived set's semantic part was taken from, if not its base."""
    if other is None:
        return {}
    return {"source": str(other.directory.resolve()), "source_digest": _digest(other)}


def _claim(out_dir: Path, record: dict) -> dict | None:
    """The finished set's meta if ``out_dir`` holds this derivation; claim it if it is new;
    an error if it holds anything else."""
    meta_path, claim_path = out_dir / "meta.json", out_dir / CLAIM_FILE
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if _same(meta.get("derived_from"), record):
            return meta
        other = meta.get("derived_from") or "a latent set that is not derived"
    elif claim_path.exists():
        other = json.loads(claim_path.read_text())
        if _same(other, record):
            return None
    else:
        other = "unclaimed shards" if any(out_dir.glob("shard-*")) else None
    if other is not None:
        raise ValueError(f"{out_dir} holds another latent set ({other}); use a new directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(claim_path, record)
    return None


def _same(stored: dict | None, record: dict) -> bool:
    """Same base content, semantic kind and PCA buffers (directories may move)."""
    keys = ("base_digest", "semantic", "pca_digest", "source_digest")
    return stored is not None and all(stored.get(k) == record.get(k) for k in keys)


def _derived_tensors(
    shard: MappedShard, pca: PCAEncoder | None, sem: MappedShard | None = None
) -> dict[str, torch.Tensor]:
    """One base shard with its semantic channels replaced (by ``sem``'s, if given)."""
    out = {
        k: torch.from_numpy(np.array(shard[k]))  # a copy: the memmap is read-only
        for k in ("label", "tex_mean", "tex_std", "repa")
        if k in shard
    }
    n, v, _, h, w = out["tex_mean"].shape
    if sem is not None:
        out["sem_mean"] = torch.from_numpy(np.array(sem["sem_mean"]))
        out["sem_std"] = torch.from_numpy(np.array(sem["sem_std"]))
        return out
    if pca is None:
        out["sem_mean"] = torch.zeros(n, v, 0, h, w)
    else:
        out["sem_mean"] = torch.cat(
            [
                _pca_codes(pca, out["repa"][lo : lo + _ENCODE_ROWS])
                for lo in range(0, n, _ENCODE_ROWS)
            ]
        )
    out["sem_std"] = torch.zeros_like(out["sem_mean"])
    return out


@torch.no_grad()
def _pca_codes(pca: PCAEncoder, repa: torch.Tensor) -> torch.Tensor:
    """(n, V, D, h, w) features -> (n, V, C, h, w) float32 PCA codes (on the CPU)."""
    codes = pca.encode(repa.flatten(0, 1).float())  # (n V, C, h, w)
    return codes.float().cpu().unflatten(0, repa.shape[:2])
