"""How much each latent-set storage option changes what training reads, on a real set.

Re-encodes a first-version (``f32``) latent set with each ``--store`` option
(:func:`sfd.latents.repa_targets.reencode_latent_set`) and compares, over every image and both
views, what the loader and the device give against the ``f32`` set:

- REPA targets vs the true encoder tokens (the ``f32`` set's fp16 targets): cosine per token
  (mean and 1st percentile) and relative error ``||t - f|| / ||f||`` over the set;
- the normalised latent ``(mu + sigma eps - mean) / std`` (each set with its own statistics,
  one fixed ``eps`` per element): max and RMS absolute error.

The PCA is fitted on an ``sfd-features`` set (the SemVAE's training features); the ``semvae``
option decodes with the SemVAE. Run on the embedded default's data stages
(``prepare_base`` of :mod:`sfd.experiments.demo`, or ``sfd demo``'s run directory)::

    python scripts/storage_fidelity.py RUN/latents RUN/features RUN/semvae --out fidelity.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from sfd.data.latent_shards import LatentDataset
from sfd.data.latent_storage import Shapes, Storage, bytes_per_image
from sfd.latents.pca import fit_pca
from sfd.latents.repa_targets import reencode_latent_set, repa_targets

DEFAULT_SPECS = (
    "f16",
    "f16lv",
    "f32-flip",
    "f16-pca4",
    "f16-pca8",
    "f16-pca16",
    "f16-pca32",
    "f16-pca32-flip",
    "f16-pca16-flip",
    "f16-pca8-flip",
    "f16-semvae",
)


def everything(ds: LatentDataset, view: int) -> dict[str, torch.Tensor]:
    index = np.arange(len(ds))
    return ds.gather(index, np.full(len(ds), view))


def target_errors(target: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
    cos = torch.nn.functional.cosine_similarity(target, truth, dim=1).flatten()
    return {
        "cos_mean": float(cos.mean()),
        "cos_p01": float(torch.quantile(cos[:: max(1, cos.numel() // 500_000)], 0.01)),
        "rel_err": float((target - truth).norm() / truth.norm()),
    }


def latent_errors(ref: LatentDataset, ds: LatentDataset, rows: dict, base: dict) -> dict:
    g = torch.Generator().manual_seed(0)
    mu = torch.cat([base["tex_mean"], base["sem_mean"]], 1)
    sd = torch.cat([base["tex_std"], base["sem_std"]], 1)
    eps = torch.randn(mu.shape, generator=g)
    truth = ref.stats.normalize(mu + sd * eps)
    mu2 = torch.cat([rows["tex_mean"], rows["sem_mean"]], 1)
    sd2 = torch.cat([rows["tex_std"], rows["sem_std"]], 1)
    err = (ds.stats.normalize(mu2 + sd2 * eps) - truth).abs()
    mean_err = (ds.stats.normalize(mu2) - ref.stats.normalize(mu)).abs()
    return {
        "latent_max_err": float(err.max()),
        "latent_rms_err": float(err.square().mean().sqrt()),
        "mean_max_err": float(mean_err.max()),
    }


def measure(ref: LatentDataset, ds: LatentDataset) -> dict:
    decode = repa_targets(ds)
    out: dict = {}
    parts = []
    for view in (0, 1):
        base, rows = everything(ref, view), everything(ds, view)
        stats = latent_errors(ref, ds, rows, base)
        truth = base["repa"].float()
        target = rows["repa"].float() if decode is None else chunked(decode, rows["repa"])
        parts.append((target, truth))
        out[f"view{view}"] = stats
    out["view1"] |= target_errors(*parts[1])  # the flipped view alone (a derived flip's)
    target, truth = (torch.cat(x) for x in zip(*parts, strict=True))
    out |= target_errors(target, truth)
    for key in ("latent_max_err", "mean_max_err"):
        out[key] = max(out["view0"][key], out["view1"][key])
    out["latent_rms_err"] = float(
        np.sqrt((out["view0"]["latent_rms_err"] ** 2 + out["view1"]["latent_rms_err"] ** 2) / 2)
    )
    return out


@torch.no_grad()
def chunked(decode, stored: torch.Tensor, rows: int = 512) -> torch.Tensor:
    return torch.cat([decode(stored[i : i + rows]) for i in range(0, len(stored), rows)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("latents", type=Path, help="a first-version (f32) latent set")
    ap.add_argument("features", type=Path, help="an sfd-features set to fit the PCA on")
    ap.add_argument("semvae", type=Path, help="the SemVAE that made the latent set")
    ap.add_argument("--specs", nargs="+", default=list(DEFAULT_SPECS))
    ap.add_argument("--work", type=Path, default=None, help="re-encoded sets [LATENTS.store]")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    ref = LatentDataset(args.latents)
    work = args.work or args.latents.with_name(args.latents.name + ".store")
    m = ref.meta
    shapes = Shapes(m["tex_channels"], m["sem_channels"], m["size"], m["repa_dim"], m["size"])
    results = {}
    for spec in args.specs:
        storage = Storage.parse(spec)
        kw = {"semvae_dir": args.semvae} if storage.repa == "semvae" else {}
        if storage.repa == "pca":
            kw["pca"] = fit_pca(args.features, storage.pca_components)
        reencode_latent_set(args.latents, work / spec, storage, **kw)
        ds = LatentDataset(work / spec)
        results[spec] = {"bytes_per_image": bytes_per_image(storage, shapes)["total"]}
        results[spec] |= measure(ref, ds)
        r = results[spec]
        print(
            f"{spec:16s} {r['bytes_per_image']:7d} B  cos {r['cos_mean']:.4f} (p1 "
            f"{r['cos_p01']:.4f})  rel {r['rel_err']:.4f}  latent max {r['latent_max_err']:.2e} "
            f"rms {r['latent_rms_err']:.2e}  | view 1: cos {r['view1']['cos_mean']:.4f} "
            f"rel {r['view1']['rel_err']:.4f}",
            flush=True,
        )
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
