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

With few held-out images (``metric_images`` is capped at half the test set) every number is
noisy: compare it with ``fd_real_floor``, measured on sets of the same size.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from sfd.data.images import collate_images
from sfd.eval.metrics import frechet_distance
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


def train_probe(features: torch.Tensor, labels: torch.Tensor, classes: int, steps: int = 300):
    """Multinomial logistic regression (L2 1e-4) on standardised features, full-batch L-BFGS."""
    mean, std = features.mean(0), features.std(0) + 1e-6
    x = (features - mean) / std
    torch.manual_seed(0)
    layer = torch.nn.Linear(x.shape[1], classes)
    opt = torch.optim.LBFGS(
        layer.parameters(), lr=1.0, max_iter=steps, line_search_fn="strong_wolfe"
    )

    def closure():
        opt.zero_grad()
        ce = torch.nn.functional.cross_entropy(layer(x), labels)
        loss = ce + 1e-4 * layer.weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return lambda f: layer((f - mean) / std).argmax(1)


def _in_domain(test_x, test_y, samples, sample_y, recon, n: int, device: str, dataset: str) -> dict:
    """FD_FMNIST and accuracy with the packaged Fashion-MNIST classifier (docs/EVALUATION.md):
    samples, the real-vs-real floor and the texture VAE's reconstructions (the ceiling)."""
    from sfd.eval.fashion_classifier import (
        class_accuracy,
        classifier_outputs,
        ensure_fashion_classifier,
        fd_fmnist,
    )

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


def evaluate_run(base, plan, device: str) -> dict:
    """The metrics of ``base.out``'s samples (``samples/samples.npz``) against ``base``'s
    held-out images, with ``plan``'s sizes (:class:`sfd.pipeline.run.RunPlan`)."""
    out, test_set = base.out, base.test_set
    test_x, test_y = _images_of(test_set, min(2 * plan.metric_images, len(test_set)))
    n = len(test_x) // 2
    test_x, test_y = test_x[: 2 * n], test_y[: 2 * n]
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
    probe_x, probe_y = _images_of(base.train_set, min(plan.probe_images, len(base.train_set)))
    npz = np.load(out / "samples" / "samples.npz")
    samples = torch.from_numpy(npz["arr_0"][:n]).permute(0, 3, 1, 2).float() / 127.5 - 1
    sample_y = torch.from_numpy(npz["arr_1"][:n])
    f_test = pooled_features(net, test_x, device)
    f_samples = pooled_features(net, samples, device)
    probe = train_probe(pooled_features(net, probe_x, device), probe_y, len(plan.names))
    # what the texture VAE alone costs: its reconstructions of the test images
    vae = load_texture_autoencoder(out / "texture_vae").to(device).eval()
    recon = reconstruct(vae, test_x[:n], device)
    f_recon = pooled_features(net, recon, device)
    in_domain = {}
    if plan.in_domain:  # Fashion-MNIST: its packaged classifier's metrics too
        in_domain = _in_domain(
            test_x, test_y, samples, sample_y, recon, n, device, plan.classifier_dataset
        )
    return {
        **in_domain,
        "probe_acc_reconstructions": float((probe(f_recon) == test_y[:n]).float().mean()),
        "fd_samples": frechet_distance(
            FeatureStats.of(f_samples), FeatureStats.of(f_test[:n]), method="eigh"
        ),
        "fd_real_floor": frechet_distance(
            FeatureStats.of(f_test[n:]), FeatureStats.of(f_test[:n]), method="eigh"
        ),
        "probe_acc_real": float((probe(f_test[:n]) == test_y[:n]).float().mean()),
        "probe_acc_samples": float((probe(f_samples) == sample_y).float().mean()),
        "metric_images": n,
        "feature_net": f"EfficientNet-Lite0 (ImageNet weights), pooled 1280-d, {POOL_SIZE} px",
    }
