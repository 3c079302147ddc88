"""The staged, cached machinery every experiment shares (``sfd demo``, ``sfd pipeline``,
``sfd ablate``'s embedded default).

A stage runs once per settings: its result, settings and wall time are kept in
``OUT/stages.json`` (:class:`sfd.experiments.ledger.Stages`), so a rerun resumes where it stopped,
never redoes a finished stage, and refuses one made with other settings. The data stages
(:func:`prepare_stages`): 1. ``texture_vae`` a small KL autoencoder; 2. ``features`` frozen
EfficientNet-Lite0 maps of training images (both flips); 3. ``semvae`` the Semantic VAE;
4. ``latents`` composite latents + REPA targets; then 5. ``sfd`` (:func:`train_stage`) and
6. ``samples`` (:func:`sample_stage`). Each stage's shapes come from the one before.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Subset

from sfd.api import load_checkpoint
from sfd.config import Config, SampleConfig, SemVAETrainConfig, TextureVAETrainConfig
from sfd.data.images import first_image_shape, read_png
from sfd.experiments.ledger import Stages, dataset_settings
from sfd.extract import extract, extract_features
from sfd.figures import sample_grid
from sfd.generate import GenerationJob, LatentSampler
from sfd.latents.encoders import EfficientNetLite0Encoder
from sfd.latents.semvae import SemVAEConfig, load_semvae
from sfd.latents.texture import load_texture_autoencoder
from sfd.training.fit import TrainState
from sfd.training.semvae_fit import train_semvae
from sfd.training.texture_vae import train_texture_vae

log = logging.getLogger("sfd.demo")


@dataclass(frozen=True)
class StageSizes:
    """What the data stages train and extract, whatever the images (the demo's and
    ``sfd pipeline``'s sizes both become one of these)."""

    texture: TextureVAETrainConfig
    semvae: SemVAEConfig
    semvae_train: SemVAETrainConfig
    semvae_images: int  # training images (and flips) whose features train the SemVAE
    encoder_stride: int
    batch_size: int
    num_classes: int


@dataclass(frozen=True)
class StagedBase:
    """The cached data stages of an experiment: what SFD trains on and decodes with."""

    out: Path
    stages: Stages
    train_set: Subset
    test_set: Subset
    encoder_dim: int
    texture: dict  # texture-VAE training summary (test PSNR, ...)
    semvae: dict  # SemVAE training summary (held-out cosine, ...)

    @property
    def latents(self) -> Path:
        return self.out / "latents"

    @property
    def features(self) -> Path:
        return self.out / "features"

    @property
    def texture_vae(self) -> Path:
        return self.out / "texture_vae"


def _how(config) -> dict:
    """A trainer config's settings, without those that do not change what it makes."""
    return {k: v for k, v in dataclasses.asdict(config).items() if k not in TrainState.RESUMABLE}


def prepare_stages(
    out: str | Path,
    train_set,
    test_set,
    sizes: StageSizes,
    device: str = "cpu",
    redo: bool = False,
) -> StagedBase:
    """Run (or resume) the data stages 1-4 (texture VAE, features, SemVAE, latents) on any
    images; each stage's shapes come from the one before (the latent grid from the image size
    and the texture VAE's downsampling, the encoder grid from it, the SemVAE's from the
    features). A stage made with other settings is refused, or with ``redo`` recomputed with
    every stage after it (:class:`sfd.experiments.ledger.Stages`)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stages = Stages(out, redo)
    tex = stages.run(
        "texture_vae",
        lambda: train_texture_vae(train_set, out / "texture_vae", sizes.texture, test_set),
        {
            "data": dataset_settings(train_set),
            "held_out": dataset_settings(test_set),
            "train": _how(sizes.texture),
        },
    )
    texture_ae = load_texture_autoencoder(out / "texture_vae")
    grid = first_image_shape(train_set)[-1] // texture_ae.downsample
    encoder = EfficientNetLite0Encoder(grid=grid, stride=sizes.encoder_stride).to(device)
    sem = semantic_stages(out, stages, train_set, test_set, sizes, encoder, texture_ae, device)
    return StagedBase(out, stages, train_set, test_set, encoder.dim, tex, sem)


def semantic_stages(
    out: Path, stages: Stages, train_set, test_set, sizes: StageSizes, encoder, texture_ae, device
) -> dict:
    """Stages 2-4 with a given encoder and texture autoencoder: features of the SemVAE's images
    (and of the held-out ones), the SemVAE, the latents; returns the SemVAE's summary."""
    semvae_set = Subset(train_set, range(min(sizes.semvae_images, len(train_set))))
    train_data, test_data = dataset_settings(train_set), dataset_settings(test_set)
    enc = {"encoder": encoder.describe()}  # a random encoder's seed included (the control)
    stages.run(
        "features",
        lambda: _features(semvae_set, encoder, out / "features", sizes, device),
        {"data": dataset_settings(semvae_set), **enc},
    )
    stages.run(
        "features_val",
        lambda: _features(test_set, encoder, out / "features_val", sizes, device),
        {"data": test_data, **enc},
    )
    sem = stages.run(
        "semvae",
        lambda: train_semvae(
            out / "features",
            out / "semvae",
            sizes.semvae,
            sizes.semvae_train,
            val_dir=out / "features_val",
        ),
        {"model": dataclasses.asdict(sizes.semvae), "train": _how(sizes.semvae_train)},
        inputs=("features", "features_val"),
    )
    stages.run(
        "latents",
        lambda: _latents(train_set, encoder, texture_ae, out, sizes, device),
        {"data": train_data, **enc},
        inputs=("texture_vae", "semvae"),
    )
    return sem


def _features(dataset, encoder, out_dir: Path, sizes: StageSizes, device: str) -> dict:
    meta = extract_features(
        dataset,
        encoder,
        out_dir,
        shard_size=2048,
        batch_size=sizes.batch_size,
        device=device,
        num_classes=sizes.num_classes,
    )
    return _summary(meta)


def _latents(dataset, encoder, texture_ae, out: Path, sizes: StageSizes, device: str) -> dict:
    meta = extract(
        dataset,
        encoder,
        texture_ae.to(device),
        load_semvae(out / "semvae"),
        out / "latents",
        shard_size=4096,
        batch_size=sizes.batch_size,
        device=device,
        num_classes=sizes.num_classes,
    )
    return _summary(meta)


def train_stage(base: StagedBase, cfg: Config, device: str) -> dict:
    """Stage 5: train SFD on the latents into ``run/`` (resumable)."""
    # lazy: the training loop imports torch.distributed.checkpoint (~1.5 s): not for --help
    from sfd.training.loop import train

    out = base.out
    return base.stages.run(
        "sfd",
        lambda: {"step": train(cfg, out / "latents", out / "run", device=device).step},
        sfd_settings(cfg),
        inputs=("latents",),
    )


# Config keys that change how a run trains, not what it makes (a rerun may differ in them).
HOW_KEYS = (
    "train.compile",
    "train.compile_scope",
    "train.log_every",
    "train.logger",
    "train.ckpt_every",
    "train.keep_last",
    "train.num_workers",
    "train.fused_adamw",
    "latent.texture_autoencoder",
)


def sfd_settings(cfg: Config) -> dict:
    """The settings of the ``sfd`` stage: ``cfg`` without :data:`HOW_KEYS` and the sampler
    (the ``samples`` stage's)."""
    tree = cfg.to_dict()
    tree.pop("sample", None)
    for key in HOW_KEYS:
        section, _, name = key.partition(".")
        tree.get(section, {}).pop(name, None)
    return tree


def _summary(meta: dict | None) -> dict:
    return {} if meta is None else {"count": meta.get("count"), "shards": len(meta["shards"])}


def sample_stage(
    out: Path,
    num: int,
    seed: int,
    names: list[str],
    device: str,
    *,
    batch_size: int = 16,
    sample: SampleConfig | None = None,
    shown: int | None = None,
    per_class: int | None = None,
) -> tuple[LatentSampler, torch.nn.Module]:
    """Stage 6: ``num`` class-balanced samples of ``OUT/run`` (PNGs + samples.npz in
    ``OUT/samples``; ``sample`` replaces the checkpoint's sampling settings) and a grid of the
    first ``shown`` (default all) in ``OUT/samples.png``. Returns the sampler and decoder."""
    model, ckpt = load_checkpoint(out / "run", device)
    cfg = ckpt.config if sample is None else dataclasses.replace(ckpt.config, sample=sample)
    sampler = LatentSampler(model, cfg, ckpt.stats, device=device)
    decoder = load_texture_autoencoder(out / "texture_vae").to(device).eval()
    job = GenerationJob(sampler, decoder, out / "samples", num, batch_size=batch_size, seed=seed)
    job.run()
    if not (out / "samples" / "samples.npz").exists():
        job.write_npz()
    shown = num if shown is None else shown
    images = np.stack([read_png(job.png_path(i)) for i in range(shown)])
    labels = job.label_of(range(shown)).tolist()
    grid = {} if per_class is None else {"per_class": per_class}
    sample_grid(images, labels, names, out / "samples.png", **grid)
    return sampler, decoder
