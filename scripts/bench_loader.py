"""Can the latent loader feed the GPUs? Time one rank's share of a training batch on this CPU,
for each way a latent set can be stored.

Writes synthetic latent sets with the paper's shapes (docs/METHOD.md §2.3-2.4: 32 texture + 16
semantic channels on a 16x16 grid, 768-d DINOv2 REPA targets, image + flip), one per
``--store`` option (docs/FORMATS.md, "Storage options"; the same random content in each), reads
every file once so the shards sit in the page cache, then times, the options taking turns
step by step, what every rank does per step
in ``sfd train``: ``global_batch`` (the seeded draws for the whole global batch, the gather of
this rank's rows from the memory-mapped shards, posterior sampling, normalisation) for
``--world-size`` ranks at global batch ``--global-batch``. "read" is the stored bytes a rank
copies out of the shards per step; ``pca`` and ``semvae`` targets are decoded on the device
afterwards (the PCA decode's time on this CPU is printed as ``decode``, an upper bound).

Run: ``python scripts/bench_loader.py`` (defaults: 2048 samples, global batch 256, 1 and 8 ranks,
the options below; ~5.5 GB in a temp dir). The page cache is what a training run sees after its
first epoch on a machine whose memory holds the set (docs/PERFORMANCE.md).
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
from sfd.data.latent_storage import PAPER_SHAPES, Storage, bytes_per_image
from sfd.hardware import cpu_model_name
from sfd.latents.pca import PCAEncoder
from sfd.latents.repa_targets import repa_targets, write_target_model
from sfd.latents.semvae import SemanticVAE, SemVAEConfig
from sfd.training.batches import EpochOrder, global_batch

SPECS = ("f32", "f16", "f16-flip", "f16-pca64", "f16-pca32-flip", "f16-pca16", "f16-semvae")


def target_models(storage: Storage, dim: int, sem_channels: int) -> dict:
    """A random orthonormal PCA of K components, or a (narrow) SemVAE decoding to ``dim``: the
    loader reads neither's weights, only their shapes."""
    if storage.repa == "pca":
        g = torch.Generator().manual_seed(1)
        q, _ = torch.linalg.qr(torch.randn(dim, storage.pca_components, generator=g))
        k = storage.pca_components
        return {"pca": PCAEncoder(torch.zeros(dim), q.T, torch.ones(k), float(k))}
    if storage.repa == "semvae":
        cfg = SemVAEConfig(in_dim=dim, latent_channels=sem_channels, width=32, depth=1, num_heads=2)
        return {"semvae": SemanticVAE(cfg).eval()}
    return {}


def write_sets(root: Path, cfg, specs: list[str], count: int, shard_size: int) -> dict:
    """One set per spec under ``root``, shard by shard from the same random tensors."""
    lat, g = cfg.latent, torch.Generator().manual_seed(0)
    storages = {spec: Storage.parse(spec) for spec in specs}
    pcas = {}
    for spec, st in storages.items():
        pcas[spec] = write_target_model(
            root / spec, st, **target_models(st, cfg.model.repa_dim, lat.sem_channels)
        )
    shards = 0
    for start in range(0, count, shard_size):
        n = min(shard_size, count - start)
        shape = (n, 2, lat.channels, lat.size, lat.size)
        mean, std = torch.randn(shape, generator=g), torch.rand(shape, generator=g) + 0.01
        raw = {
            "label": torch.randint(0, cfg.model.num_classes, (n,), generator=g),
            "tex_mean": mean[:, :, : lat.tex_channels],
            "tex_std": std[:, :, : lat.tex_channels],
            "sem_mean": mean[:, :, lat.tex_channels :],
            "sem_std": std[:, :, lat.tex_channels :],
            "repa": torch.randn(n, 2, cfg.model.repa_dim, lat.size, lat.size, generator=g).half(),
        }
        for spec, st in storages.items():
            write_latent_shard(root / spec, shards, raw, st, pcas[spec])
        shards += 1
    for spec, st in storages.items():
        finalize_latent_set(root / spec, cfg.model.num_classes, shards, storage=st)
    return storages


def warm(directory: Path) -> int:
    """Read every file once (into the page cache); returns the set's bytes."""
    total = 0
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            with open(path, "rb") as f:
                while chunk := f.read(1 << 24):
                    total += len(chunk)
    return total


def interleaved(sets: dict[str, LatentDataset], cfg, rows: int, steps: int) -> dict:
    """Median seconds per step of rank 0's rows for each set, the sets taking turns step by
    step (so a busy host slows all alike), and of decoding its PCA targets on this CPU."""
    orders = {spec: EpochOrder(len(d), cfg.train.seed) for spec, d in sets.items()}
    decoders = {spec: repa_targets(d) for spec, d in sets.items() if d.storage.repa == "pca"}
    times: dict = {spec: [] for spec in sets}
    decodes: dict = {spec: [] for spec in decoders}
    for step in range(steps):
        for spec, data in sets.items():
            t0 = time.perf_counter()
            batch = global_batch(data, orders[spec], cfg, step, 0, rows)  # rank 0's rows
            times[spec].append(time.perf_counter() - t0)
            if spec in decoders:
                t0 = time.perf_counter()
                decoders[spec](batch.repa)
                decodes[spec].append(time.perf_counter() - t0)
    return {
        spec: (
            statistics.median(times[spec][1:]),
            statistics.median(decodes[spec][1:]) if spec in decodes else None,
        )
        for spec in sets
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="XL")
    ap.add_argument("--store", nargs="+", default=list(SPECS))
    ap.add_argument("--samples", type=int, default=2048)
    ap.add_argument("--shard-size", type=int, default=512)
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
    one_view = dataclasses.replace(PAPER_SHAPES, views=1)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        storages = write_sets(Path(tmp), cfg, args.store, args.samples, args.shard_size)
        took = time.perf_counter() - t0
        print(f"wrote {len(storages)} sets of {args.samples} samples in {took:.0f} s")
        sizes = {spec: warm(Path(tmp) / spec) for spec in storages}
        sets = {spec: LatentDataset(Path(tmp) / spec) for spec in storages}
        for ws in args.world_size:
            rows = args.global_batch // ws
            for spec, (med, dec) in interleaved(sets, cfg, rows, args.steps).items():
                per_row = bytes_per_image(storages[spec], one_view)["total"]  # one view read
                extra = f", decode {1e3 * dec:.1f} ms (this CPU)" if dec is not None else ""
                print(
                    f"{spec:15s} {sizes[spec] / args.samples / 1e6:.3f} MB/image on disk | "
                    f"world size {ws}: {rows} rows/rank, read {rows * per_row / 1e6:.2f} MB/step, "
                    f"{1e3 * med:.1f} ms/step (median), {rows / med:.0f} img/s per rank{extra}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
