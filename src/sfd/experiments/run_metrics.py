"""Stage 7 of every pipeline run (``sfd demo``, ``sfd pipeline``): offline metrics of the
samples against held-out real images (:func:`evaluate_run`).

- ``fd_samples``: Fréchet distance between pooled EfficientNet-Lite0 features (real ImageNet
  weights, packaged) of samples and of real test images;
- ``fd_real_floor``: the same distance between two disjoint sets of real test images of the
  same size (what a perfect generator would get with this many images);
- ``probe_acc_real`` / ``probe_acc_samples``: accuracy of a linear probe on the pooled features,
  trained on real training images, on real test images / on samples (w.r.t. the class each
  sample was conditioned on);
- ``probe_acc_reconstructions``: the same probe on the texture VAE's reconstructions of the
  real test images: the ceiling the samples can reach through this decoder;
- on Fashion-MNIST, ``fd_fmnist_*`` / ``classifier_acc_*``: the in-domain metrics of the packaged
  Fashion-MNIST classifier (:mod:`sfd.eval.fashion_classifier`) for samples, the real floor and
  the reconstructions.

Every number says what it rests on: ``images`` (per metric, the images of each set),
``spread`` (the bootstrap standard error over images, :mod:`sfd.eval.spread`; ``null`` above
its size limit) and ``reference`` (the held-out images per class, the classes it lacks). With
``plan.match_classes`` (``sfd pipeline``) the samples, the reference and the floor's second set
are cut to the same count of each class, so a distance compares like with like whatever the
balance of the folder and of the class-balanced samples. With few held-out images
(``metric_images`` is at most half the test set) every number is noisy: compare it with
``fd_real_floor``, measured on sets of the same size, and read its spread.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from sfd.data.images import collate_images
from sfd.eval.fashion_classifier import (
    class_accuracy,
    classifier_outputs,
    ensure_fashion_classifier,
    fd_fmnist,
)
from sfd.eval.linear_probe import train_probe
from sfd.eval.metrics import frechet_distance
from sfd.eval.spread import fd_spread, mean_spread
from sfd.eval.stats import FeatureStats
from sfd.generate import to_uint8
from sfd.latents.encoders import EfficientNetLite0Encoder
from sfd.latents.texture import load_texture_autoencoder

log = logging.getLogger("sfd.demo")
POOL_SIZE = 64  # input size of the pooled-feature network (speed on 2 cores)
MIN_METRIC_IMAGES = 2  # per set: the floor needs two disjoint real sets


@torch.no_grad()
def pooled_features(
    net: EfficientNetLite0Encoder, images: torch.Tensor, device: str, batch: int = 256
) -> torch.Tensor:
    """(N, C, H, W) images in [-1, 1] -> (N, 1280) pooled EfficientNet-Lite0 features."""
    return torch.cat(
        [
            net.pooled(images[i : i + batch].to(device), size=POOL_SIZE).cpu()
            for i in range(0, len(images), batch)
        ]
    )


def _images_of(dataset, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` items of ``dataset`` as (images, labels), without unreadable files."""
    loader = DataLoader(Subset(dataset, range(n)), batch_size=512, collate_fn=collate_images)
    xs, ys = zip(*(batch for batch in loader if len(batch[1])), strict=True)
    return torch.cat(xs), torch.cat(ys)


@torch.no_grad()
def reconstruct(vae, images: torch.Tensor, device: str, batch: int = 250) -> torch.Tensor:
    """The texture autoencoder's reconstructions (posterior mean, decoded, clamped to [-1, 1])
    of (N, C, H, W) images in [-1, 1], on the CPU."""
    return torch.cat(
        [
            vae.decode(vae.encode(images[i : i + batch].to(device))[0]).clamp(-1, 1).cpu()
            for i in range(0, len(images), batch)
        ]
    )


def _in_domain(test_x, test_y, samples, sample_y, recon, n: int, device: str, dataset: str) -> dict:
    """FD_FMNIST and accuracy with the packaged Fashion-MNIST classifier (docs/EVALUATION.md):
    samples, the real-vs-real floor and the texture VAE's reconstructions (the ceiling)."""
    net = ensure_fashion_classifier(device=device, dataset=dataset)

    def outputs(images: torch.Tensor):
        return classifier_outputs(net, to_uint8(images).permute(0, 3, 1, 2), device=device)

    real_logits, real = outputs(test_x[:n])
    _, other = outputs(test_x[n : 2 * n])
    sample_logits, fake = outputs(samples)
    recon_logits, rec = outputs(recon)

    return {
        "fd_fmnist_samples": fd_fmnist(fake, real),
        "fd_fmnist_real_floor": fd_fmnist(other, real),
        "fd_fmnist_reconstructions": fd_fmnist(rec, real),
        "classifier_acc_samples": class_accuracy(sample_logits, sample_y),
        "classifier_acc_real": class_accuracy(real_logits, test_y[:n]),
        "classifier_acc_reconstructions": class_accuracy(recon_logits, test_y[:n]),
    }


def matched_classes(*labels: torch.Tensor) -> list[torch.Tensor]:
    """Indices into each of the label vectors such that every set holds the same number of
    each class: per class, the smallest count among the sets (the first images of it)."""
    picks: list[list[torch.Tensor]] = [[] for _ in labels]
    for c in sorted(set(torch.cat(labels).tolist())):
        where = [torch.nonzero(y == c).flatten() for y in labels]
        k = min(len(w) for w in where)
        for pick, w in zip(picks, where, strict=True):
            pick.append(w[:k])
    return [torch.cat(p) if p else torch.zeros(0, dtype=torch.long) for p in picks]


def _sets(test_y: torch.Tensor, sample_y: torch.Tensor, n: int, match: bool):
    """(reference, floor, samples) indices: the first n held-out images, the next n, the first
    n samples; with ``match``, cut to the same count of each class in all three."""
    ref, other, fake = torch.arange(n), torch.arange(n, 2 * n), torch.arange(min(n, len(sample_y)))
    if not match:
        return ref, other, fake
    r, o, f = matched_classes(test_y[ref], test_y[other], sample_y)
    return ref[r], other[o], f


def _reference(test_y, ref, names, held_out: int) -> dict:
    counts = torch.bincount(test_y[ref], minlength=len(names)).tolist()
    return {
        "images": len(ref),
        "held_out_images": held_out,
        "per_class": dict(zip(names, counts, strict=True)),
        "classes_missing": [name for name, k in zip(names, counts, strict=True) if k == 0],
    }


def evaluate_run(base, plan, device: str) -> dict:
    """The metrics of ``base.out``'s samples (``samples/samples.npz``) against ``base``'s
    held-out images, with ``plan``'s sizes (:class:`sfd.experiments.run.RunPlan`), each with the
    number of images it rests on (``images``) and, for few images, its bootstrap standard
    error (``spread``)."""
    out, test_set = base.out, base.test_set
    test_x, test_y = _images_of(test_set, min(2 * plan.metric_images, len(test_set)))
    n = len(test_x) // 2
    if n < MIN_METRIC_IMAGES:
        why = f"{len(test_x)} readable held-out images; the metrics need >= 4"
        log.warning("metrics skipped: %s", why)
        return {"metric_images": n, "skipped": why}
    net = EfficientNetLite0Encoder(grid=8, stride=plan.sizes.encoder_stride).to(device).eval()
    real_npz = out / "real_test.npz"  # the FD reference, for `sfd eval --ref` (ADM layout)
    if not real_npz.exists():
        tmp = out / "real_test.tmp.npz"
        np.savez(tmp, arr_0=to_uint8(test_x[:n]).numpy(), arr_1=test_y[:n].numpy())
        tmp.replace(real_npz)
    npz = np.load(out / "samples" / "samples.npz")
    all_y = torch.from_numpy(npz["arr_1"])
    ref, other, fake = _sets(test_y, all_y, n, plan.match_classes)
    if min(len(ref), len(other), len(fake)) < MIN_METRIC_IMAGES:
        why = (
            f"{len(ref)} held-out images with a class of the samples and of the floor's set; "
            "the metrics need >= 2 per set (hold out more: --stage test_fraction=...)"
        )
        log.warning("metrics skipped: %s", why)
        return {"metric_images": len(ref), "skipped": why}
    samples = torch.from_numpy(npz["arr_0"][fake.numpy()]).permute(0, 3, 1, 2).float() / 127.5 - 1
    sample_y = all_y[fake]
    f_test = pooled_features(net, test_x, device)
    f_samples = pooled_features(net, samples, device)
    # what the texture VAE alone costs: its reconstructions of the test images
    vae = load_texture_autoencoder(out / "texture_vae").to(device).eval()
    recon = reconstruct(vae, test_x[ref], device)
    in_domain = {}
    if plan.in_domain:  # Fashion-MNIST: its packaged classifier's metrics too
        in_domain = _in_domain(
            test_x, test_y, samples, sample_y, recon, n, device, plan.classifier_dataset
        )
    feats = {"samples": (f_samples, sample_y), "real": (f_test[ref], test_y[ref])}
    feats["reconstructions"] = (pooled_features(net, recon, device), test_y[ref])
    fd, probe = _fd(f_samples, f_test[ref], f_test[other]), _probe(base, plan, net, feats, device)
    return {
        **in_domain,
        **probe,
        **fd,
        "images": {**fd["images"], **probe.get("images", {})},
        "spread": {**fd["spread"], **probe.get("spread", {})},
        "metric_images": len(ref),
        "reference": _reference(test_y, ref, list(plan.names), len(test_set)),
        "feature_net": f"EfficientNet-Lite0 (ImageNet weights), pooled 1280-d, {POOL_SIZE} px",
    }


def _fd(f_samples, f_ref, f_other) -> dict:
    """The Fréchet distances of samples and of the real floor, their image counts and spread."""
    return {
        "fd_samples": frechet_distance(
            FeatureStats.of(f_samples), FeatureStats.of(f_ref), method="eigh"
        ),
        "fd_real_floor": frechet_distance(
            FeatureStats.of(f_other), FeatureStats.of(f_ref), method="eigh"
        ),
        "images": {
            "fd_samples": [len(f_samples), len(f_ref)],
            "fd_real_floor": [len(f_other), len(f_ref)],
        },
        "spread": {
            "fd_samples": fd_spread(f_samples, f_ref),
            "fd_real_floor": fd_spread(f_other, f_ref),
        },
    }


def _probe(base, plan, net, feats: dict, device: str) -> dict:
    """A linear probe's accuracy on each of ``feats`` ({name: (features, labels)}); with one
    class there is nothing to tell apart, and no probe."""
    names = [f"probe_acc_{k}" for k in feats]
    if len(plan.names) < 2:
        return {**dict.fromkeys(names), "probe": "one class: no classification to measure"}
    probe_x, probe_y = _images_of(base.train_set, min(plan.probe_images, len(base.train_set)))
    probe = train_probe(pooled_features(net, probe_x, device), probe_y, len(plan.names))
    hits = {k: (probe(f) == y).double() for k, (f, y) in feats.items()}
    return {
        **{name: float(h.mean()) for name, h in zip(names, hits.values(), strict=True)},
        "images": {
            "probe_train": len(probe_y),
            **{name: len(h) for name, h in zip(names, hits.values(), strict=True)},
        },
        "spread": {name: mean_spread(h) for name, h in zip(names, hits.values(), strict=True)},
    }


def describe(metrics: dict) -> list[str]:
    """One line per metric of ``metrics.json``: its value, spread and the images it rests on."""
    lines = []
    images, spread = metrics.get("images", {}), metrics.get("spread", {})
    for key, n in images.items():
        value = metrics.get(key)
        if value is None:
            continue
        sd = spread.get(key)
        pm = "" if sd is None else f" ± {sd:.3g}"
        rests = f"{n[0]} vs {n[1]} images" if isinstance(n, list) else f"{n} images"
        lines.append(f"{key} {value:.4g}{pm} ({rests})")
    ref = metrics.get("reference")
    if ref:
        per = ", ".join(f"{k} {v}" for k, v in ref["per_class"].items())
        missing = ref["classes_missing"]
        lack = f"; no held-out image of {', '.join(missing)}" if missing else ""
        lines.append(f"reference: {ref['images']} held-out images ({per}){lack}")
    if "probe" in metrics:
        lines.append(f"probe: {metrics['probe']}")
    if "skipped" in metrics:
        lines.append(f"metrics skipped: {metrics['skipped']}")
    return lines
