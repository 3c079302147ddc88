"""Pre-computed composite latents on disk: the format training reads (docs/METHOD.md §2.3-2.4).

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

This is the first layout (``meta.json`` version 1). Version 2 stores the same content in less
space, as its ``storage`` record says (:mod:`sfd.data.latent_storage`): posteriors in float16
(``*_std`` or ``*_logvar``), REPA targets as PCA codes ``repa_pca`` (N, V_r, K, H, W) or not at
all, and for a derived flip one view of targets (V_r = 1). The reader returns the same keys
for both versions (see :class:`LatentDataset`).

``meta.json`` (written last) names the shards with their counts and hashes and holds
``num_classes``, the shapes, and per-channel ``stats`` (mean, std) of the composite latent over
the WHOLE set, both views: ``mean = E[mu]`` and ``var = Var[mu] + E[sigma^2]`` (the variance of
a posterior sample), accumulated in float64 in shard order, so they are deterministic.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sfd.data.latent_storage import (
    FIRST_LAYOUT,
    PCA_FILE,
    SEMVAE_DIR,
    Storage,
    check_pca_file,
    encode_posterior,
    encode_repa,
    semvae_repa_dim,
    stored_std,
)
from sfd.data.shards import finished_shard, write_shard
from sfd.data.tensor_files import MappedShard, atomic_write_json, rows, sha256_file
from sfd.errors import BadInputError, MissingInputError
from sfd.latents.composite import LatentStats

FORMAT = "sfd-latents"
VERSION = 1  # the first layout (float32 posteriors, both views' full targets)
VERSION_STORAGE = 2  # any other storage (sfd.data.latent_storage), recorded in meta.json
REQUIRED_KEYS = ("label", "tex_mean", "tex_std", "sem_mean", "sem_std")
# meta.json keys that finalize_latent_set computes from a set's shards; a set written from another
# (derived, re-encoded) carries every other key of its source's meta.json.
COMPUTED_META_KEYS = frozenset(
    {
        "format",
        "version",
        "num_classes",
        "count",
        "views",
        "tex_channels",
        "sem_channels",
        "size",
        "repa_dim",
        "shards",
        "stats",
        "storage",
    }
)


def write_latent_shard(
    directory: Path,
    index: int,
    tensors: dict[str, torch.Tensor],
    storage: Storage = FIRST_LAYOUT,
    pca: dict[str, torch.Tensor] | None = None,
) -> dict:
    """Validate and atomically write one latent shard: ``tensors`` hold the float posteriors and
    both views' REPA targets (module docstring), stored as ``storage`` says (``pca``: the
    ``mean`` and ``components`` of a ``pca`` storage's PCA)."""
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
    out = {"label": tensors["label"].long()}
    for part in ("tex", "sem"):
        out |= encode_posterior(tensors[f"{part}_mean"], tensors[f"{part}_std"], storage, part)
    if "repa" in tensors:
        out |= encode_repa(tensors["repa"], storage, pca)
    return write_shard(directory, index, out)


def finalize_latent_set(
    directory: Path,
    num_classes: int,
    num_shards: int,
    extra: dict | None = None,
    storage: Storage = FIRST_LAYOUT,
    has_repa: bool = True,
) -> dict:
    """Check every shard, compute the whole-set statistics and write ``meta.json`` atomically
    (version 1 for the first version's storage, else version 2 with a ``storage`` record;
    ``has_repa=False``: a ``semvae`` storage set without REPA targets)."""
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
        "version": VERSION if storage.legacy else VERSION_STORAGE,
        "num_classes": int(num_classes),
        "count": sum(i["count"] for i in infos),
        "views": int(first["tex_mean"].shape[1]),
        "tex_channels": int(first["tex_mean"].shape[2]),
        "sem_channels": int(first["sem_mean"].shape[2]),
        "size": int(first["tex_mean"].shape[3]),
        "repa_dim": _stored_repa_dim(directory, first, storage, has_repa),
        "shards": infos,
        **(extra or {}),
    }
    if not storage.legacy:
        meta["storage"] = _storage_record(directory, storage)
    meta["stats"] = _stats(directory, infos, storage).to_dict()
    atomic_write_json(directory / "meta.json", meta)
    return meta


def _stored_repa_dim(directory: Path, first: MappedShard, storage: Storage, has: bool) -> int:
    if storage.repa == "semvae":
        return semvae_repa_dim(directory) if has else 0
    if storage.repa == "pca" and "repa_pca" in first:
        return int(MappedShard(directory / PCA_FILE)["mean"].shape[0])
    return int(first["repa"].shape[2]) if "repa" in first else 0


def _storage_record(directory: Path, storage: Storage) -> dict:
    record = storage.record()
    if storage.repa == "pca":
        record |= {"file": PCA_FILE, "sha256": sha256_file(directory / PCA_FILE)}
    if storage.repa == "semvae":
        record["dir"] = SEMVAE_DIR
    return record


def _stats(directory: Path, infos: Iterable[dict], storage: Storage = FIRST_LAYOUT) -> LatentStats:
    total = None
    for info in infos:
        shard = MappedShard(directory / info["file"])
        mu = np.concatenate([shard["tex_mean"], shard["sem_mean"]], axis=2).astype(np.float64)
        sd = torch.cat([stored_std(shard, "tex", storage), stored_std(shard, "sem", storage)], 2)
        sd = sd.numpy().astype(np.float64)
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


_META_INTS = ("num_classes", "count", "views", "tex_channels", "sem_channels", "size", "repa_dim")


def shard_path(directory: Path, name: Any) -> Path:
    """``directory / name`` for a file name a ``meta.json`` gives; anything that is not a plain
    file name inside ``directory`` (``../x``, ``/etc/passwd``, ``a/b``) is refused."""
    if not isinstance(name, str) or not name or name in (".", "..") or Path(name).name != name:
        raise BadInputError(
            f"{directory}/meta.json names the shard {name!r}, which is not a file inside "
            f"{directory}; refused (shard names must be plain file names)"
        )
    path = Path(directory) / name
    if path.is_symlink() or path.resolve().parent != Path(directory).resolve():
        raise BadInputError(f"latent shard {path} points outside {directory}; refused")
    return path


def read_meta(meta_path: Path) -> dict:
    """A latent set's ``meta.json``, checked: format, integer fields, shards and statistics."""
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BadInputError(f"{meta_path} is not valid JSON: {err}") from None
    if not isinstance(meta, dict):
        raise BadInputError(f"{meta_path} must hold a JSON object")
    if meta.get("format") != FORMAT or meta.get("version") not in (VERSION, VERSION_STORAGE):
        raise BadInputError(
            f"{meta_path}: expected format {FORMAT} v{VERSION} or v{VERSION_STORAGE}; got "
            f"{meta.get('format')} v{meta.get('version')}"
        )
    for key in _META_INTS:
        value = meta.get(key)
        low = 1 if key in ("num_classes", "views", "tex_channels", "size") else 0
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise BadInputError(f"{meta_path}: {key!r} must be an integer >= {low}; got {value!r}")
    shards = meta.get("shards")
    if not isinstance(shards, list) or not shards:
        raise BadInputError(f"{meta_path}: 'shards' must be a non-empty list")
    for info in shards:
        ok = isinstance(info, dict) and all(
            isinstance(info.get(k), int) and info[k] >= 0 for k in ("count", "bytes")
        )
        if not ok or "file" not in info:
            raise BadInputError(f"{meta_path}: a shard entry lacks file, count or bytes: {info!r}")
        shard_path(meta_path.parent, info["file"])
    stats = meta.get("stats")
    channels = meta["tex_channels"] + meta["sem_channels"]
    try:
        good = all(len(stats[k]) == channels for k in ("mean", "std"))
        good = good and all(float(v) > 0 for v in stats["std"])
    except (TypeError, KeyError, ValueError):
        good = False
    if not good:
        raise BadInputError(
            f"{meta_path}: 'stats' must hold 'mean' and positive 'std' for {channels} channels"
        )
    return meta


class LatentDataset:
    """Random access to a latent shard set; every shard is memory-mapped once.

    ``storage`` is the set's :class:`~sfd.data.latent_storage.Storage`; :meth:`gather` returns
    float32 posteriors whatever is stored and, under ``repa``, the stored form of the targets
    (full tokens, PCA codes or, for ``semvae`` storage, the semantic mean), each view's own:
    a derived flip is mirrored here. ``repa_pca`` holds a ``pca`` set's PCA (mean, components).
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        meta_path = self.directory / "meta.json"
        if not meta_path.exists():
            raise MissingInputError(
                f"{self.directory} is not a latent set: no meta.json (write "
                f"one with `sfd extract` or sfd.data.latent_shards)"
            )
        self.meta = read_meta(meta_path)
        self.storage = Storage.from_meta(self.meta, meta_path)
        self.repa_pca = self._check_target_model()
        self.shards = [self._open_shard(info) for info in self.meta["shards"]]
        self.offsets = np.cumsum([0] + [len(s) for s in self.shards])
        if int(self.offsets[-1]) != self.meta["count"]:
            raise BadInputError(
                f"{meta_path}: count {self.meta['count']} but the shards hold "
                f"{int(self.offsets[-1])} samples"
            )
        self.stats = LatentStats.from_dict(self.meta["stats"])

    def _check_target_model(self) -> dict[str, np.ndarray] | None:
        """A ``pca`` set's PCA file or a ``semvae`` set's SemVAE, checked against meta.json."""
        st, dim = self.storage, self.meta["repa_dim"]
        if dim == 0:
            return None
        if st.repa == "pca":
            return check_pca_file(self.directory, self.meta["storage"], dim, st.pca_components)
        if st.repa == "semvae" and semvae_repa_dim(self.directory) != dim:
            raise BadInputError(
                f"{self.directory / SEMVAE_DIR}: the SemVAE decodes to "
                f"{semvae_repa_dim(self.directory)}-d features; meta.json says repa_dim {dim}"
            )
        return None

    def _keys(self) -> dict[str, tuple[tuple[str, ...], tuple[int, ...] | None]]:
        """Stored tensor -> (allowed dtypes, shape after N) for this set's storage."""
        m, st = self.meta, self.storage
        h, v, pdt = m["size"], m["views"], (st.posterior_dtype,)
        keys = {"label": (("int64", "int32"), ())}
        for part, c in (("tex", m["tex_channels"]), ("sem", m["sem_channels"])):
            keys[f"{part}_mean"] = (pdt, (v, c, h, h))
            keys[f"{part}_{st.std_key}"] = (pdt, (v, c, h, h))
        if m["repa_dim"] > 0 and st.repa_key is not None:
            c = m["repa_dim"] if st.repa == "full" else st.pca_components
            dtypes = ("float16", "float32") if st.legacy else ("float16",)
            keys[st.repa_key] = (dtypes, (st.repa_views(v), c, None))
        return keys

    def _open_shard(self, info: dict) -> MappedShard:
        """One shard named by ``meta.json``, checked against it (keys, shapes, dtypes, labels)."""
        path = shard_path(self.directory, info["file"])
        if not path.is_file() or path.stat().st_size != info["bytes"]:
            raise BadInputError(f"latent shard {path} is missing or has the wrong size")
        shard = MappedShard(path)
        m, n, keys = self.meta, info["count"], self._keys()
        missing = [k for k in keys if k not in shard]
        if missing:
            raise BadInputError(f"latent shard {path} lacks the tensors {missing}")
        for key, (dtypes, rest) in keys.items():
            shape, arr = (n, *rest), shard[key]
            got = tuple(arr.shape)
            if rest and rest[-1] is None:  # REPA targets may have their own square grid
                side = got[3] if len(got) == 5 and got[3] == got[4] else m["size"]
                shape = (*shape[:3], side, side)
            if got != shape or arr.dtype.name not in dtypes:
                raise BadInputError(
                    f"latent shard {path}: tensor {key!r} is {arr.dtype.name} "
                    f"{got}; meta.json implies {dtypes[0]} {shape}"
                )
        labels = shard["label"]
        if n and (labels.min() < 0 or labels.max() >= m["num_classes"]):
            raise BadInputError(
                f"latent shard {path}: labels in [{labels.min()}, {labels.max()}] outside "
                f"[0, num_classes={m['num_classes']})"
            )
        return shard

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def num_classes(self) -> int:
        return int(self.meta["num_classes"])

    @property
    def has_repa(self) -> bool:
        return self.meta["repa_dim"] > 0

    def gather(self, index: np.ndarray, view: np.ndarray) -> dict[str, torch.Tensor]:
        """Rows ``index`` (global sample indices) in view ``view`` (0 image, 1 flip), in order
        (class docstring)."""
        index = np.asarray(index, dtype=np.int64)
        view = np.asarray(view, dtype=np.int64)
        if index.size and (index.min() < 0 or index.max() >= len(self)):
            raise IndexError(f"sample index out of range [0, {len(self)})")
        shard_of = np.searchsorted(self.offsets, index, side="right") - 1
        parts: dict[str, list[torch.Tensor]] = {}
        order = []
        for s in np.unique(shard_of):
            sel = np.nonzero(shard_of == s)[0]
            local = index[sel] - self.offsets[s]
            for k, value in self._rows(self.shards[s], local, view[sel]).items():
                parts.setdefault(k, []).append(value)
            order.append(sel)
        inverse = torch.from_numpy(np.argsort(np.concatenate(order)) if order else np.array([]))
        return {k: torch.cat(v)[inverse] for k, v in parts.items()}

    def _rows(self, shard: MappedShard, local: np.ndarray, view: np.ndarray) -> dict:
        """One shard's rows: label, float32 posteriors, the stored form of the REPA targets."""
        st = self.storage
        if st.legacy:  # the first version's reads, exactly
            keys = list(REQUIRED_KEYS) + (["repa"] if self.has_repa else [])
            return {
                k: rows(shard[k], local)
                if k == "label"
                else torch.from_numpy(np.ascontiguousarray(shard[k][local, view]))
                for k in keys
            }
        out = {"label": rows(shard["label"], local)}
        for part in ("tex", "sem"):
            mean = np.ascontiguousarray(shard[f"{part}_mean"][local, view])
            out[f"{part}_mean"] = torch.from_numpy(mean).float()  # torch: vectorised half
            out[f"{part}_std"] = stored_std(shard, part, st, (local, view))
        if self.has_repa and st.repa == "semvae":
            out["repa"] = out["sem_mean"].clone()
        elif self.has_repa:
            stored = shard[st.repa_key]
            if st.flip == "stored":
                out["repa"] = torch.from_numpy(np.ascontiguousarray(stored[local, view]))
            else:  # one copy: view 1's rows read mirrored
                flip = view == 1
                arr = np.empty((len(local), *stored.shape[2:]), stored.dtype)
                arr[~flip] = stored[local[~flip], 0]
                arr[flip] = stored[local[flip], 0, ..., ::-1]
                out["repa"] = torch.from_numpy(arr)
        return out
