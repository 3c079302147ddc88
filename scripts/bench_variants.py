"""Variants of THIS tree's training step in one process, calls alternated (medians, ratios).

    python scripts/bench_variants.py threads --preset demo              # 1 vs 2 threads
    python scripts/bench_variants.py compile --preset demo --threads 2  # eager / blocks / loss
    python scripts/bench_variants.py compile --preset demo --threads 1 \\
        --set model.width=128 --set model.depth=4 --set model.num_heads=2 \\
        --set model.repa_projector_dim=128                             # the ablation grid model

``compile`` also prints each variant's first two steps (compilation included): run it with
``TORCHINDUCTOR_CACHE_DIR`` set to an empty directory for a cold cache, then again for a warm
one. Against another version of sfd use ``sfd bench --compare REF`` instead.
"""

from __future__ import annotations

import argparse
import time

import torch

from sfd.bench.throughput import build_train_step, time_interleaved
from sfd.config import apply_overrides, preset

COMPILE = {
    "eager": [],
    "blocks": ["train.compile=true"],
    "loss": ["train.compile=true", "train.compile_scope=loss"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["threads", "compile"])
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--iters", type=int, default=9)
    args = ap.parse_args()
    cfg = apply_overrides(preset(args.preset), args.overrides)
    cpu = torch.device("cpu")
    if args.what == "threads":
        _, step = build_train_step(cfg, args.batch_size)
        fns = {}
        for n in (1, 2):
            fns[f"{n} thread(s)"] = lambda n=n: (torch.set_num_threads(n), step())
    else:
        if args.threads:
            torch.set_num_threads(args.threads)
        fns = {}
        for name, sets in COMPILE.items():
            _, step = build_train_step(apply_overrides(cfg, sets), args.batch_size)
            t0 = time.perf_counter()
            step()
            step()
            print(f"{name}: first two steps {time.perf_counter() - t0:.1f} s", flush=True)
            fns[name] = step
    secs = time_interleaved(list(fns.values()), cpu, 1, args.iters)
    base, first = next(iter(fns)), secs[0]
    for name, sec in zip(fns, secs, strict=True):
        print(f"{name:>12}: {1e3 * sec:8.1f} ms/step  speed-up vs {base}: {first / sec:.3f}")


if __name__ == "__main__":
    main()
