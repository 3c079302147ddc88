"""Feature shards (format ``sfd-features``): the frozen encoder's features of every image and its
flip, the Semantic VAE's training data; written by :func:`sfd.extract.extract_features`.

Format ``sfd-features`` version 1: shards with ``features`` (N, V=2, C, h, w) float16 and
``label`` (N,) int64; ``meta.json`` has ``format``, ``version``, ``count``, ``views``, ``dim``,
``grid``, ``num_classes``, ``shards`` and the extraction settings under ``extraction``.
:class:`FeatureShards` streams a set shard by shard through memory maps (never the whole set in
memory).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from sfd.data.shards import finished_shard
from sfd.data.tensor_files import MappedShard, atomic_write_json

FEATURE_FORMAT = "sfd-features"
FEATURE_VERSION = 1


def finalize_feature_set(
    directory: Path, num_classes: int, num_shards: int, extra: dict | None = None
) -> dict:
    """Check every feature shard and write ``meta.json`` atomically."""
    infos = []
    for i in range(num_shards):
        info = finished_shard(directory, i, verify=True)
        if info is None:
            raise ValueError(
                f"feature shard {i} in {directory} is missing or corrupt; rerun extraction"
            )
        infos.append(info)
    first = MappedShard(Path(directory) / infos[0]["file"])["features"]
    meta = {
        "format": FEATURE_FORMAT,
        "version": FEATURE_VERSION,
        "num_classes": num_classes,
        "count": sum(i["count"] for i in infos),
        "views": int(first.shape[1]),
        "dim": int(first.shape[2]),
        "grid": int(first.shape[3]),
        "shards": infos,
        **(extra or {}),
    }
    atomic_write_json(Path(directory) / "meta.json", meta)
    return meta


class FeatureShards:
    """A ``sfd-features`` set, memory-mapped shard by shard (see the module docstring), or the
    rows ``[start, stop)`` of it (counted over the whole set, shards in order)."""

    def __init__(self, directory: str | Path, start: int = 0, stop: int | None = None) -> None:
        self.directory = Path(directory)
        meta_path = self.directory / "meta.json"
        if not meta_path.exists():
            raise FileNotFoundError(
                f"{self.directory} is not a feature set (no meta.json); "
                f"write one with `sfd extract-features`"
            )
        self.meta = json.loads(meta_path.read_text())
        if self.meta.get("format") != FEATURE_FORMAT:
            raise ValueError(
                f"{meta_path}: format {self.meta.get('format')!r} is not {FEATURE_FORMAT!r}"
            )
        stop = int(self.meta["count"]) if stop is None else stop
        self.shards, self.rows = [], []  # per shard: its memmap and the rows of it we use
        first = 0
        for info in self.meta["shards"]:
            lo, hi = max(start, first), min(stop, first + info["count"])
            if lo < hi:
                self.shards.append(MappedShard(self.directory / info["file"]))
                self.rows.append(range(lo - first, hi - first))
            first += info["count"]
        self.count = sum(len(r) for r in self.rows)
        self.dim, self.grid = int(self.meta["dim"]), int(self.meta["grid"])

    def split(self, fraction: float) -> tuple[FeatureShards, FeatureShards | None]:
        """(train, held-out): the last ``fraction`` of the images (at least one) are held out;
        ``fraction = 0`` holds out nothing (None)."""
        n = int(self.meta["count"])
        if fraction == 0:
            return self, None
        held = max(1, round(fraction * n))
        if not 0 < fraction < 1 or held >= n:
            raise ValueError(
                f"cannot hold out a fraction {fraction} of {n} feature rows; pass a value in "
                f"[0, 1) that leaves training rows (0: no hold-out), or a validation set"
            )
        return FeatureShards(self.directory, 0, n - held), FeatureShards(self.directory, n - held)

    def batches(self, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
        """Endless float32 batches (B, C, h, w) over (row, view) pairs: shards in a random
        order, rows shuffled within each shard."""
        for s, pick in self.picks(batch_size, generator):
            yield self.read(s, pick)

    def picks(self, batch_size: int, generator: torch.Generator) -> Iterator[tuple]:
        """The (shard, flat (row, view) indices) of :meth:`batches`, without reading them."""
        while True:
            for s in torch.randperm(len(self.shards), generator=generator).tolist():
                n, views = len(self.rows[s]), self.shards[s]["features"].shape[1]
                order = torch.randperm(n * views, generator=generator).numpy()
                for start in range(0, len(order), batch_size):
                    yield s, order[start : start + batch_size]

    def read(self, s: int, pick: np.ndarray) -> torch.Tensor:
        features = self.shards[s]["features"]  # (N, V, C, h, w) memmap
        rows, views = self.rows[s], features.shape[1]
        return torch.from_numpy(features[rows.start + pick // views, pick % views]).float()

    def ordered(self, batch_size: int) -> Iterator[torch.Tensor]:
        """Every (row, view) once, in order (for evaluation)."""
        for shard, rows in zip(self.shards, self.rows, strict=True):
            features = shard["features"][rows.start : rows.stop]
            flat = features.reshape(-1, *features.shape[2:])
            for start in range(0, len(flat), batch_size):
                yield torch.from_numpy(np.array(flat[start : start + batch_size], np.float32))
