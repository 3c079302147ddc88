"""Where a testbed sits between the two regimes: class information and spatial structure of each
representation the ablation grid trains on (docs/ABLATION.md, "The two testbeds").

For an `sfd ablate` grid directory (its base autoencoders, PCA and, if present, the random-encoder
control), on the grid's embedded dataset:

- **linear probe**: multinomial logistic regression (L-BFGS, L2 1e-4, standardised features;
  ``sfd.eval.linear_probe.train_probe``) fitted on ``--train`` training images and scored on
  ``--test`` test images. For the composites the test images are held-out garments on the *test*
  photographs, which no representation has seen: the probe must read the garment, not the
  background. Representations: the pixels, the texture latent (posterior mean), the pretrained
  encoder's map (the SemVAE input and REPA target), its SemVAE latent and PCA latent, the random
  encoder's map and its SemVAE latent.
- **spatial agreement with the encoder**: per test image, the cosine self-similarity of the
  representation's tokens (one per latent position; the pixels as 4 x 4-pixel patches of a
  32 px image) correlated (Pearson, off-diagonal entries) with the pretrained encoder's own
  self-similarity; mean over images. 1 is the encoder itself.

    python scripts/probe_testbed.py --grid runs/ablate-composites --dataset composites \\
        --out experiments/regime/probe_composites.json

``--reuse`` an earlier JSON of the same grid to probe only what it lacks (e.g. the control's
latent, added to the grid since).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch.utils.data import Subset

from sfd.eval.linear_probe import train_probe
from sfd.experiments.demo import DemoSettings, embedded_sets
from sfd.latents.encoders import EfficientNetLite0Encoder
from sfd.latents.pca import load_pca
from sfd.latents.semvae import load_semvae
from sfd.latents.texture import load_texture_autoencoder


def images(dataset: str, n_train: int, n_test: int, background: float):
    """(train images, labels), (test images, labels): test on unseen photographs."""
    s = DemoSettings(dataset=dataset, background_strength=background, train_images=n_train)
    train, _ = embedded_sets(s)
    if dataset == "composites":
        from sfd.data.composites import FashionComposites

        test = FashionComposites(split="test", background_strength=background)
    else:
        from sfd.data.fashion_mnist import FashionMNIST

        test = FashionMNIST(split="test")
    test = Subset(test, range(n_test))

    def stack(ds):
        xs, ys = zip(*(ds[i] for i in range(len(ds))), strict=True)
        return torch.stack(xs), torch.tensor(ys)

    return stack(train), stack(test)


@torch.no_grad()
def representations(grid: Path, x: torch.Tensor, stride: int = 8) -> dict[str, torch.Tensor]:
    """name -> (N, C, h, w) maps of images ``x`` (N, C, H, W) in [-1, 1]."""
    base = grid / "base"
    tex = load_texture_autoencoder(base / "texture_vae").eval()
    size = x.shape[-1] // tex.downsample
    out: dict[str, torch.Tensor] = {}
    patch = x.shape[-1] // size
    out["pixels"] = torch.nn.functional.pixel_unshuffle(x, patch)  # (N, C p p, h, w)
    means, feats, rfeats = [], [], []
    enc = EfficientNetLite0Encoder(grid=size, stride=stride)
    control = grid / "control" / "semvae"
    renc = EfficientNetLite0Encoder(grid=size, stride=stride, random_init=0)
    for lo in range(0, len(x), 250):
        xb = x[lo : lo + 250]
        means.append(tex.encode(xb if tex.image_channels == xb.shape[1] else xb[:, :1])[0])
        feats.append(enc.features(xb))
        rfeats.append(renc.features(xb))
    out["texture latent"] = torch.cat(means)
    out["encoder features"] = f = torch.cat(feats)
    out["SemVAE latent"] = load_semvae(base / "semvae").eval().encode(f)[0]
    if (grid / "pca" / "pca.json").exists():
        out["PCA latent"] = load_pca(grid / "pca").encode(f).float()
    out["random encoder features"] = r = torch.cat(rfeats)
    if control.is_dir():
        out["random-encoder SemVAE latent"] = load_semvae(control).eval().encode(r)[0]
    return out


def self_similarity(maps: torch.Tensor) -> torch.Tensor:
    """(N, C, h, w) -> (N, h w, h w) cosine similarity of per-image centred tokens."""
    t = maps.flatten(2).transpose(1, 2).double()  # (N, T, C)
    t = t - t.mean(1, keepdim=True)
    t = torch.nn.functional.normalize(t, dim=-1)
    return t @ t.transpose(1, 2)


def spatial_agreement(maps: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean over images of the Pearson correlation of the off-diagonal self-similarities."""
    a, b = self_similarity(maps), self_similarity(reference)
    n = a.shape[-1]
    off = ~torch.eye(n, dtype=torch.bool)
    a, b = a[:, off], b[:, off]
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    r = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12)
    return float(r.mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--grid", type=Path, required=True)
    ap.add_argument("--dataset", choices=("fashion-mnist", "composites"), required=True)
    ap.add_argument("--background-strength", type=float, default=0.6)
    ap.add_argument("--train", type=int, default=5000)
    ap.add_argument("--test", type=int, default=2000)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument(
        "--reuse",
        type=Path,
        default=None,
        help="an earlier probe JSON of the same grid and settings: its entries are kept, only "
        "the representations it lacks are probed (e.g. a control added to the grid since)",
    )
    args = ap.parse_args()
    earlier = json.loads(args.reuse.read_text()) if args.reuse else {}
    for key in ("train", "test", "dataset"):
        if earlier and earlier.get(key) != getattr(args, key):
            ap.error(
                f"--reuse {args.reuse}: its {key} is {earlier.get(key)!r}, "
                f"not {getattr(args, key)!r}"
            )
    t0 = time.perf_counter()
    (xtr, ytr), (xte, yte) = images(args.dataset, args.train, args.test, args.background_strength)
    rtr, rte = representations(args.grid, xtr), representations(args.grid, xte)
    results = {"chance": 0.1, "train": args.train, "test": args.test, "dataset": args.dataset}
    for name in rtr:
        if name in earlier:
            results[name] = earlier[name]
            continue
        probe = train_probe(rtr[name].flatten(1), ytr, 10)
        acc = float((probe(rte[name].flatten(1)) == yte).float().mean())
        spatial = spatial_agreement(rte[name], rte["encoder features"])
        results[name] = {"dim": int(rtr[name][0].numel()), "probe": acc, "spatial": spatial}
        print(f"{name:32s} dim {results[name]['dim']:5d}  probe {acc:.3f}  spatial {spatial:.3f}")
    results["seconds"] = round(time.perf_counter() - t0, 1)  # this run's; not the reused entries'
    if args.reuse:
        results["reused"] = {"file": str(args.reuse), "entries": sorted(set(earlier) & set(rtr))}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
