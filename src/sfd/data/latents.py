"""Pre-computed composite latents on disk: the format training reads (METHOD.md §2.3-2.4).

Format ``sfd-latents`` version 1, a shard set (see :mod:`sfd.data.shards`) whose shards hold,
for N images each, with V = 2 views (view 0 the image, view 1 its horizontal flip):

==============  ======================  =======  ===========================================
key             shape                   dtype    meaning
==============  ======================  =======  ===========================================
``label``       (N,)                    int64    class index in [0, num_classes)
``tex_mean``    (N, V, C_z, H, W)       float32  texture posterior mean (pixel VAE)
``tex_std``     (N, V, C_z, H, W)       float32  texture posterior std
``sem_mean``    (N, V, C_s, H, W)       float32  semantic posterior mean (Semantic VAE)
``sem_std``     (N, V, C_s, H, W)       float32  semantic posterior std
``repa``        (N, V, D, H, W)         float16  REPA targets: frozen-encoder features (optional)
==============  ======================  =======  ===========================================

``meta.json`` (written last) names the shards with their counts and hashes and holds
``num_classes``, the shapes, and per-channel ``stats`` (mean, std) of the composite latent over
the WHOLE set, both views: ``mean = E[mu]`` and ``var = Var[mu] + E[sigma^2]`` (the variance of
a posterior sample), accumulated in float64 in shard order, so they are deterministic.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from sfd.data.shards import MappedShard, atomic_write_json, finished_shard, rows, write_shard
from sfd.latents.composite import LatentStats

FORMAT = "sfd-latents"
VERSION = 1
REQUIRED_KEYS = ("label", "tex_mean", "tex_std", "sem_mean", "sem_std")


def write_latent_shard(directory: Path, index: int, tensors: dict[str, torch.Tensor]) -> dict:
    """Validate and atomically write one latent shard (see the module docstring for keys)."""
    missing = [k for k in REQUIRED_KEYS if k not in tensors]
    if missing:
        raise ValueError(f"latent shard is missing tensors {missing}")
    n = tensors["label"].shape[0]
    for key in ("tex_mean", "tex_std", "sem_mean", "sem_std", "repa"):
        if key in tensors and (tensors[key].ndim != 5 or tensors[key].shape[0] != n):
            raise ValueError(
                f"latent shard tensor {key!r} must be (N={n}, V, C, H, W); got "
                f"{tuple(tensors[key].shape)}"
            )
    out = {k: tensors[k].float() for k in ("tex_mean", "tex_std", "sem_mean", "sem_std")}
    out["label"] = tensors["label"].long()
    if "repa" in tensors:
        out["repa"] = tensors["repa"].half()
    return write_shard(directory, index, out)


def finalize_latent_set(
    directory: Path, num_classes: int, num_shards: int, extra: dict | None = None
) -> dict:
    """Check every shard, compute the whole-set statistics and write ``meta.json`` atomically."""
    directory = Path(directory)
    infos = []
    for i in range(num_shards):
        info = finished_shard(directory, i, verify=True)
        if info is None:
            raise ValueError(f"shard {i} in {directory} is missing or corrupt; rerun extraction")
        infos.append(info)
    first = MappedShard(directory / infos[0]["file"])
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "num_classes": int(num_classes),
        "count": sum(i["count"] for i in infos),
        "views": int(first["tex_mean"].shape[1]),
        "tex_channels": int(first["tex_mean"].shape[2]),
        "sem_channels": int(first["sem_mean"].shape[2]),
        "size": int(first["tex_mean"].shape[3]),
        "repa_dim": int(first["repa"].shape[2]) if "repa" in first else 0,
        "shards": infos,
        **(extra or {}),
    }
    meta["stats"] = _stats(directory, infos).to_dict()
    atomic_write_json(directory / "meta.json", meta)
    return meta


def _stats(directory: Path, infos: Iterable[dict]) -> LatentStats:
    total = None
    for info in infos:
        shard = MappedShard(directory / info["file"])
        mu = np.concatenate([shard["tex_mean"], shard["sem_mean"]], axis=2).astype(np.float64)
        sd = np.concatenate([shard["tex_std"], shard["sem_std"]], axis=2).astype(np.float64)
        axes = (0, 1, 3, 4)
        part = np.stack(
            [
                np.full(mu.shape[2], mu.size / mu.shape[2]),
                mu.sum(axes),
                (mu**2).sum(axes),
                (sd**2).sum(axes),
            ]
        )
        total = part if total is None else total + part
    n, s1, s2, v = total
    mean = s1 / n
    var = s2 / n - mean**2 + v / n
    return LatentStats(torch.from_numpy(mean).float(), torch.from_numpy(np.sqrt(var)).float())


class LatentDataset:
    """Random access to a latent shard set; every shard is memory-mapped once."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        meta_path = self.directory / "meta.json"
        if not meta_path.exists():
            raise FileNotFoundError(
                f"{self.directory} is not a latent set: no meta.json (write "
                f"one with `sfd extract` or sfd.data.latents)"
            )
        self.meta = json.loads(meta_path.read_text())
        if self.meta.get("format") != FORMAT or self.meta.get("version") != VERSION:
            raise ValueError(
                f"{meta_path}: expected format {FORMAT} v{VERSION}; got "
                f"{self.meta.get('format')} v{self.meta.get('version')}"
            )
        self.shards = []
        for info in self.meta["shards"]:
            path = self.directory / info["file"]
            if not path.exists() or path.stat().st_size != info["bytes"]:
                raise ValueError(f"latent shard {path} is missing or has the wrong size")
            self.shards.append(MappedShard(path))
        self.offsets = np.cumsum([0] + [len(s) for s in self.shards])
        self.stats = LatentStats.from_dict(self.meta["stats"])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def num_classes(self) -> int:
        return int(self.meta["num_classes"])

    @property
    def has_repa(self) -> bool:
        return self.meta["repa_dim"] > 0

    def gather(self, index: np.ndarray, view: np.ndarray) -> dict[str, torch.Tensor]:
        """Rows ``index`` (global sample indices) in view ``view`` (0 image, 1 flip), in order."""
        index = np.asarray(index, dtype=np.int64)
        view = np.asarray(view, dtype=np.int64)
        if index.size and (index.min() < 0 or index.max() >= len(self)):
            raise IndexError(f"sample index out of range [0, {len(self)})")
        shard_of = np.searchsorted(self.offsets, index, side="right") - 1
        keys = list(REQUIRED_KEYS) + (["repa"] if self.has_repa else [])
        parts: dict[str, list[torch.Tensor]] = {k: [] for k in keys}
        order = []
        for s in np.unique(shard_of):
            sel = np.nonzero(shard_of == s)[0]
            local = index[sel] - self.offsets[s]
            shard = self.shards[s]
            for k in keys:
                arr = shard[k]
                parts[k].append(
                    rows(arr, local)
                    if k == "label"
                    else torch.from_numpy(np.ascontiguousarray(arr[local, view[sel]]))
                )
            order.append(sel)
        inverse = torch.from_numpy(np.argsort(np.concatenate(order)) if order else np.array([]))
        return {k: torch.cat(v)[inverse] for k, v in parts.items()}
