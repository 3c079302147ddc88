"""Can the latent loader feed the GPUs? Time one rank's share of a training batch on this CPU.

Writes a synthetic latent set with the paper's shapes (METHOD.md §2.3-2.4: 32 texture + 16
semantic channels on a 16x16 grid, 768-d DINOv2 REPA targets in fp16, image + flip), then
times what every rank does per step in ``sfd train``: ``global_batch`` (the seeded draws for
the whole global batch, the gather of this rank's rows from the memory-mapped shards, posterior
sampling, normalisation) for ``--world-size`` ranks at global batch ``--global-batch``.

Run: ``python scripts/bench_loader.py`` (defaults: 4096 samples, global batch 256, 1 and 8 ranks).
The first pass over the shards reads them from disk; later passes hit the page cache, which is
what a training run sees after its first epoch on a machine with enough RAM.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import torch

from sfd.config import preset
from sfd.data.latent_shards import LatentDataset, finalize_latent_set, write_latent_shard
from sfd.hardware import cpu_model_name
from sfd.training.batches import EpochOrder, global_batch


def write_set(directory: Path, cfg, count: int, shard_size: int) -> None:
    lat, g = cfg.latent, torch.Generator().manual_seed(0)
    shards = 0
    for start in range(0, count, shard_size):
        n = min(shard_size, count - start)
        shape = (n, 2, lat.channels, lat.size, lat.size)
        mean, std = torch.randn(shape, generator=g), torch.rand(shape, generator=g)
        write_latent_shard(
            directory,
            shards,
            {
                "label": torch.randint(0, cfg.model.num_classes, (n,), generator=g),
                "tex_mean": mean[:, :, : lat.tex_channels],
                "tex_std": std[:, :, : lat.tex_channels],
                "sem_mean": mean[:, :, lat.tex_channels :],
                "sem_std": std[:, :, lat.tex_channels :],
                "repa": torch.randn(
                    n, 2, cfg.model.repa_dim, lat.size, lat.size, generator=g
                ).half(),
            },
        )
        shards += 1
    finalize_latent_set(directory, cfg.model.num_classes, shards)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="XL")
    ap.add_argument("--samples", type=int, default=4096)
    ap.add_argument("--shard-size", type=int, default=1024)
    ap.add_argument("--global-batch", type=int, default=256)
    ap.add_argument("--world-size", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()

    cfg = preset(args.preset)
    cfg = dataclasses.replace(
        cfg, train=dataclasses.replace(cfg.train, global_batch_size=args.global_batch)
    )
    threads = torch.get_num_threads()
    print(f"hardware: {cpu_model_name()} ({threads} threads), torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        write_set(Path(tmp), cfg, args.samples, args.shard_size)
        gb = sum(p.stat().st_size for p in Path(tmp).iterdir()) / 1e9
        print(f"wrote {args.samples} samples ({gb:.2f} GB) in {time.perf_counter() - t0:.1f} s")
        data = LatentDataset(tmp)
        order = EpochOrder(len(data), cfg.train.seed)
        for ws in args.world_size:
            rows = args.global_batch // ws
            times = []
            for step in range(args.steps):
                t0 = time.perf_counter()
                global_batch(data, order, cfg, step, 0, rows)  # rank 0's rows
                times.append(time.perf_counter() - t0)
            med = statistics.median(times[1:])
            print(
                f"world size {ws}: {rows} rows/rank/step, {1e3 * med:.1f} ms/step (median), "
                f"{rows / med:.0f} img/s per rank"
            )


if __name__ == "__main__":
    main()
