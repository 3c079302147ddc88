"""How much class information each latent carries: a linear probe per latent kind.

For the ablation (docs/ABLATION.md): semantic-first can only help if the semantic latent holds
information the texture latent lacks. A multinomial logistic regression (L-BFGS, L2 1e-4, on
standardised flattened maps) is fitted on the first ``--train`` images of a latent set (view 0,
posterior means) and scored on the next ``--test`` images, for: the texture latent, the
SemVAE latent, the PCA latent of an `sfd ablate` grid (if present), the raw encoder features
(the REPA targets), and texture + semantic together.

    python scripts/probe_latents.py --grid runs/ablate --train 8000 --test 2000
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from sfd.data.latent_shards import LatentDataset
from sfd.eval.linear_probe import train_probe


def arrays(directory: Path, n: int) -> dict[str, torch.Tensor]:
    ds = LatentDataset(directory)
    if len(ds) < n:
        raise SystemExit(f"{directory} holds {len(ds)} images; {n} needed")
    batch = ds.gather(np.arange(n), np.zeros(n, dtype=np.int64))
    out = {
        "label": batch["label"],
        "texture": batch["tex_mean"].flatten(1),
        "semantic": batch["sem_mean"].flatten(1),
    }
    if "repa" in batch:
        out["features"] = batch["repa"].float().flatten(1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--grid", type=Path, default=Path("runs/ablate"))
    ap.add_argument("--train", type=int, default=8000)
    ap.add_argument("--test", type=int, default=2000)
    ap.add_argument("--out", type=Path, default=None, help="Write JSON here.")
    args = ap.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    n = args.train + args.test
    sem = arrays(args.grid / "base" / "latents", n)
    kinds = {
        "texture latent": sem["texture"],
        "SemVAE latent": sem["semantic"],
        "texture + SemVAE": torch.cat([sem["texture"], sem["semantic"]], 1),
    }
    pca_dir = args.grid / "latents" / "pca"
    if (pca_dir / "meta.json").exists():
        kinds["PCA latent"] = arrays(pca_dir, n)["semantic"]
    if "features" in sem:
        kinds["encoder features (REPA targets)"] = sem["features"]
    y = sem["label"]
    results = {}
    for name, x in kinds.items():
        t0 = time.perf_counter()
        probe = train_probe(x[: args.train], y[: args.train], int(y.max()) + 1)
        acc = float((probe(x[args.train :]) == y[args.train :]).float().mean())
        results[name] = {"dim": int(x.shape[1]), "test_accuracy": acc}
        secs = time.perf_counter() - t0
        print(f"{name:34s} dim {x.shape[1]:5d}  test acc {acc:.4f}  ({secs:.0f} s)")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
