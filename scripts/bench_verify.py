"""What checking data against its sha256 digests costs: hashlib's throughput on this CPU and
``sfd``'s check of a latent set with the paper's shard shapes (docs/RELIABILITY.md).

Writes a synthetic ``sfd-latents`` set (docs/METHOD.md §2.3-2.4: 32 texture + 16 semantic channels
on a 16x16 grid, mean and std in fp32, 768-d REPA targets in fp16, image + flip: 0.98 MB per
image, so ImageNet's 1.28 M images are 1.26 TB), then times

- ``hashlib.sha256`` over an in-memory buffer (the CPU's ceiling, one thread);
- :func:`sfd.data.shards.check_files` over the set's shards with 1 and ``--threads`` threads
  (what a run does before its first step, per rank), from the page cache: a first read from
  disk or network storage is bounded by that storage's read rate instead.

Run: ``python scripts/bench_verify.py`` (defaults: 4 shards of 256 images, 1.0 GB, in a
temporary directory).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from sfd.data.latent_shards import finalize_latent_set, write_latent_shard
from sfd.data.shards import check_files, recorded_shards
from sfd.hardware import cpu_model_name


def write_set(directory: Path, shards: int, per_shard: int) -> None:
    g = torch.Generator().manual_seed(0)
    for k in range(shards):
        n = per_shard

        def draw(c, g=g, n=n):
            return torch.randn((n, 2, c, 16, 16), generator=g)

        write_latent_shard(
            directory,
            k,
            {
                "label": torch.zeros(n, dtype=torch.long),
                "tex_mean": draw(32),
                "tex_std": draw(32).abs() + 0.1,
                "sem_mean": draw(16),
                "sem_std": draw(16).abs() + 0.1,
                "repa": draw(768).half(),
            },
        )
    finalize_latent_set(directory, 1000, shards)


def hashlib_rate(size: int = 1 << 28, repeats: int = 3) -> float:
    buf = os.urandom(1 << 24) * (size >> 24)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        hashlib.sha256(buf).hexdigest()
        best = min(best, time.perf_counter() - t0)
    return size / 1e9 / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--per-shard", type=int, default=256)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--dir", type=Path, default=None)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=a.dir) as tmp:
        root = Path(tmp) / "latents"
        write_set(root, a.shards, a.per_shard)
        entries = recorded_shards(root)
        total = sum(e.bytes for e in entries)
        result = {
            "cpu": cpu_model_name(),
            "cpus": os.cpu_count(),
            "hashlib_sha256_gb_per_s": round(hashlib_rate(), 3),
            "set": {
                "shards": a.shards,
                "images_per_shard": a.per_shard,
                "mb_per_image": round(total / (a.shards * a.per_shard) / 1e6, 4),
                "gb": round(total / 1e9, 3),
            },
        }
        check_files(entries, 1)  # warm the page cache
        for threads in sorted({1, a.threads}):
            runs = [check_files(entries, threads) for _ in range(3)]
            assert all(r.intact for r in runs)
            best = max(r.gb_per_s for r in runs)
            result[f"check_{threads}_threads"] = {
                "gb_per_s": round(best, 3),
                "s_per_gb": round(1 / best, 3),
                "imagenet_1.26tb_minutes_one_rank": round(1260 / best / 60, 1),
            }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
