"""The ablation grid's data (the embedded default's latents and features, or given ones), its
evaluator (Fréchet distance and accuracy of the packaged Fashion-MNIST classifier, on samples
of a checkpoint) and its sampler (see :mod:`sfd.experiments.ablate`)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from sfd.api import load_checkpoint
from sfd.data.latent_shards import LatentDataset
from sfd.data.tensor_files import atomic_write_json
from sfd.eval.fashion_classifier import (
    META_FILE,
    class_accuracy,
    classifier_outputs,
    load_fashion_classifier,
    packaged_classifier,
    train_fashion_classifier,
)
from sfd.eval.metrics import frechet_distance
from sfd.eval.stats import FeatureStats
from sfd.experiments.ablate_grid import AblationSettings, sample_config
from sfd.experiments.ablate_rows import parse_row
from sfd.experiments.ablate_store import store_sets
from sfd.experiments.control import random_encoder_latents
from sfd.experiments.demo import DemoSettings, demo_stage_sizes, prepare_base
from sfd.experiments.run_metrics import pooled_features, reconstruct
from sfd.generate import GenerationJob, LatentSampler, to_uint8
from sfd.latents.derive import derive_latent_set
from sfd.latents.encoders import EfficientNetLite0Encoder
from sfd.latents.pca import fit_pca, load_pca, save_pca
from sfd.latents.texture import load_texture_autoencoder

# --------------------------------------------------------------------------------------------
# Data: the latent sets each row trains on


@dataclass
class AblationData:
    """Where the grid's inputs live (all cached; see :func:`prepare_data`)."""

    latents: dict[str, Path]  # "semvae" / "pca" / "none" -> latent set
    decoder: Path  # texture autoencoder directory
    reference: Path  # real images (.npz, arr_0 uint8 NHWC, arr_1 labels), >= 2 x num_samples
    meta: dict  # the SemVAE latent set's meta.json
    classifier: Path | None  # the in-domain Fashion-MNIST classifier, when the data is that
    info: dict = field(default_factory=dict)


def prepare_data(
    out: Path,
    settings: AblationSettings,
    *,
    latents: Path | None = None,
    features: Path | None = None,
    decoder: Path | None = None,
    reference: Path | None = None,
    demo_settings=None,
    device: str = "cpu",
) -> AblationData:
    """The SemVAE latent set (the demo's, built and cached, or ``latents``) and the derived
    sets the requested rows need; errors before any training if an input is missing."""
    rows = [parse_row(r) for r in settings.rows]
    need = {r.semantic for r in rows}
    info: dict = {}
    control = None
    if latents is None:  # the embedded default: the demo's data stages, cached in out/base
        base, ds = _embedded_base(out, settings, demo_settings, device)
        latents, features, decoder = base.latents, base.features, base.texture_vae
        reference = reference or _demo_reference(out, base.test_set, settings.num_samples)
        info = {"texture_vae": base.texture, "semvae": base.semvae}
        classifier = _fashion_classifier(
            out / "classifier", settings.quick, device, settings.dataset
        )
        if "random" in need:
            control, info["control_semvae"] = random_encoder_latents(
                out, base, demo_stage_sizes(ds, device), device
            )
    else:
        _refuse_embedded_options(settings, need, latents)
        classifier = None
    ds = LatentDataset(latents)
    meta = ds.meta
    decoder = _checked_inputs(ds, rows, latents, features, decoder, reference)
    sets = _latent_sets(out, latents, features, meta, need, info)
    if control is not None:
        sets["random"] = control
    sets |= store_sets(out, Path(latents), features, meta, rows)  # the store-* rows
    return AblationData(sets, Path(decoder), Path(reference), meta, classifier, info)


def _embedded_base(out: Path, settings: AblationSettings, demo_settings, device: str):
    """The embedded dataset's data stages in ``out/base`` (built or resumed) with the grid's
    dataset, semantic channels and texture-VAE length; returns them and the demo settings."""
    ds = demo_settings or (DemoSettings.quick() if settings.quick else DemoSettings())
    ds = dataclasses.replace(
        ds, dataset=settings.dataset, background_strength=settings.background_strength
    )
    if settings.sem_channels is not None:
        ds = dataclasses.replace(ds, sem_channels=settings.sem_channels)
    if settings.texture_steps is not None:
        ds = dataclasses.replace(ds, texture_steps=settings.texture_steps)
    return prepare_base(out / "base", ds, device=device), ds


def _refuse_embedded_options(settings: AblationSettings, need: set, latents: Path) -> None:
    """Options that change the embedded default's data stages mean nothing with ``--data``."""
    if "random" in need:
        raise ValueError(
            "rows random-sync/random-sf (the random-encoder control) need the images: they "
            "run on the embedded datasets only, not with --data"
        )
    if settings.sem_channels is not None or settings.texture_steps is not None:
        raise ValueError(
            "--sem-channels and --texture-steps change the embedded default's SemVAE or "
            f"texture VAE; with --data {latents} the latent set's own are used"
        )


def _checked_inputs(ds, rows, latents, features, decoder, reference) -> Path:
    """The texture decoder (given, or the one the latent set names); a ``ValueError`` for an
    input the rows need and do not have."""
    meta, need = ds.meta, {r.semantic for r in rows}
    if decoder is None:
        named = meta.get("texture_autoencoder")
        decoder = (Path(latents) / named) if named else None
    if decoder is None or not Path(decoder).exists():
        raise ValueError(
            f"no texture decoder for {latents}: pass --decoder (a texture autoencoder directory)"
        )
    if reference is None or not Path(reference).exists():
        raise ValueError("no real reference images: pass --ref REAL.npz (arr_0 uint8 NHWC)")
    if any(r.repa for r in rows) and not ds.has_repa:
        bad = [r.name for r in rows if r.repa]
        raise ValueError(
            f"rows {bad} need REPA targets but {latents} holds none (extract with an encoder "
            f"that writes REPA targets, or ask only for rows without REPA: baseline)"
        )
    if "pca" in need and features is None:
        raise ValueError(
            f"rows redi/redi-sf need the encoder features the PCA is fitted on: pass --features "
            f"(a `sfd extract-features` directory of training images) for {latents}"
        )
    return Path(decoder)


def _latent_sets(out: Path, latents, features, meta: dict, need: set, info: dict) -> dict:
    """The latent set of each semantic kind the rows need (derived sets cached in ``out``)."""
    sets = {"semvae": Path(latents)}
    if "none" in need:
        derive_latent_set(latents, out / "latents" / "none", "none")
        sets["none"] = out / "latents" / "none"
    if "pca" in need:
        pca_dir = out / "pca"
        if not (pca_dir / "pca.json").exists():
            save_pca(fit_pca(features, int(meta["sem_channels"])), pca_dir)
        pca = load_pca(pca_dir)
        derive_latent_set(latents, out / "latents" / "pca", "pca", pca=pca)
        sets["pca"] = out / "latents" / "pca"
        info["pca_explained_variance_ratio"] = float(pca.explained_variance_ratio.sum())
    return sets


def _fashion_classifier(path: Path, quick: bool, device: str, dataset: str) -> Path:
    """The in-domain classifier of the metrics: the packaged one (the same metric everywhere);
    trained once into ``path`` only where the package lacks it."""
    if (packaged_classifier(dataset) / META_FILE).exists():
        return packaged_classifier(dataset)
    if quick:  # toy budget: the test suite checks the plumbing, not the metric's quality
        train_fashion_classifier(path, steps=60, train_images=2000, device=device, dataset=dataset)
    else:
        train_fashion_classifier(path, device=device, dataset=dataset)
    return path


def _demo_reference(out: Path, test_set, num: int) -> Path:
    """2 x ``num`` real test images (uint8 NHWC + labels) for the floor and the distances."""
    path = out / f"real_test_{num}.npz"
    if path.exists():
        return path
    need = 2 * num
    dataset = test_set.dataset if len(test_set) < need else test_set
    if len(dataset) < need:
        raise ValueError(f"{need} real test images needed for {num} samples; {len(dataset)} exist")
    xs, ys = zip(*DataLoader(Subset(dataset, range(need)), batch_size=1000), strict=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, arr_0=to_uint8(torch.cat(xs)).numpy(), arr_1=torch.cat(ys).numpy())
    tmp.replace(path)
    return path


# --------------------------------------------------------------------------------------------
# Metrics


class Evaluator:
    """Metrics of a set of uint8 images against real ones, with the floor and the ceiling.

    - ``fd_fmnist`` / ``acc``: Fréchet distance in the penultimate features of the in-domain
      Fashion-MNIST classifier and its accuracy w.r.t. the class asked for (Fashion-MNIST only);
    - ``fd_effnet``: Fréchet distance in EfficientNet-Lite0 pooled features (64 px), any data.

    The reference holds 2N real images: the first N are what samples are compared with, the
    other N give the real-vs-real floor; the texture decoder's reconstructions of the first N
    give the ceiling a generator can reach through this decoder.
    """

    def __init__(self, out: Path, data: AblationData, num: int, device: str) -> None:
        self.device, self.num = device, num
        self.effnet = EfficientNetLite0Encoder(grid=8).to(device).eval()
        self.classifier = None
        if data.classifier is not None:
            self.classifier = load_fashion_classifier(data.classifier, device=device)
            self.classifier_info = json.loads((data.classifier / "classifier.json").read_text())
        ref = np.load(data.reference)
        images, labels = ref["arr_0"], (ref["arr_1"] if "arr_1" in ref.files else None)
        if len(images) < 2 * num:
            raise ValueError(f"{data.reference}: {len(images)} images; {2 * num} needed")
        self.real = self.features(images[:num])
        self.real_stats = {k: FeatureStats.of(v) for k, v in self.real.items() if k != "logits"}
        self.real_labels = None if labels is None else torch.from_numpy(labels[:num]).long()
        self.reference = self._reference(out, data, images, labels)

    @torch.no_grad()
    def features(self, images: np.ndarray) -> dict[str, torch.Tensor]:
        """uint8 (N, H, W, C) -> {"effnet": (N, 1280), "fmnist": (N, D), "logits": (N, K)}."""
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
        xf = x.float() / 127.5 - 1
        out = {"effnet": pooled_features(self.effnet, xf, self.device, batch=250)}
        if self.classifier is not None:
            logits, feats = classifier_outputs(self.classifier, x, device=self.device)
            out["fmnist"], out["logits"] = feats.double(), logits
        return out

    def metrics(self, feats: dict, labels: torch.Tensor | None) -> dict[str, float]:
        result = {
            "fd_effnet": frechet_distance(
                FeatureStats.of(feats["effnet"]), self.real_stats["effnet"], method="eigh"
            )
        }
        if "fmnist" in feats:
            result["fd_fmnist"] = frechet_distance(
                FeatureStats.of(feats["fmnist"]), self.real_stats["fmnist"], method="eigh"
            )
            if labels is not None:
                result["acc"] = class_accuracy(feats["logits"], labels)
        return result

    def _reference(self, out: Path, data: AblationData, images, labels) -> dict:
        path = out / f"reference_{self.num}.json"
        if path.exists():
            return json.loads(path.read_text())

        n = self.num
        other = self.features(images[n : 2 * n])
        lab = None if labels is None else torch.from_numpy(labels[n : 2 * n]).long()
        floor = self.metrics(other, lab)
        vae = load_texture_autoencoder(data.decoder).to(self.device).eval()
        x = torch.from_numpy(np.ascontiguousarray(images[:n])).permute(0, 3, 1, 2)
        x = x.float() / 127.5 - 1
        if x.shape[1] == 3 and vae.image_channels == 1:  # gray data stored as RGB PNGs
            x = x[:, :1]
        recon = reconstruct(vae, x, self.device)
        recon_u8 = to_uint8(recon).numpy()
        ceiling = self.metrics(self.features(recon_u8), self.real_labels)
        result = {"floor": floor, "ceiling": ceiling, "num": n}
        if self.classifier is not None:
            result["real_acc"] = float(
                (self.real["logits"].argmax(1) == self.real_labels).float().mean()
            )
            result["classifier"] = self.classifier_info
        atomic_write_json(path, result)
        return result


@torch.no_grad()
def sample_images(
    ckpt_dir: Path,
    decoder,
    settings: AblationSettings,
    cfg_scale: float,
    device,
    sampler: str | None = None,
):
    """Balanced, per-image-seeded samples of one checkpoint: uint8 (N, H, W, C), labels and
    the velocity evaluations per image (the grid's sampler, or ``sampler`` of the NFE axis)."""
    model, ckpt = load_checkpoint(ckpt_dir, device)
    cfg = sample_config(ckpt.config, settings, cfg_scale, sampler)
    sampler = LatentSampler(model, cfg, ckpt.stats, device=device)
    n = settings.num_samples
    job = GenerationJob(sampler, decoder, Path("."), n, seed=settings.sample_seed)
    chunk = 250
    images = np.concatenate(
        [job.images(list(range(i, min(i + chunk, n)))).numpy() for i in range(0, n, chunk)]
    )
    return images, job.label_of(range(n)), float(np.mean(job.nfe))
