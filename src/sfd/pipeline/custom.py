"""``sfd pipeline``: SFD end to end on your own images (an ImageFolder, or Fashion-MNIST).

The code path of ``sfd demo`` (:func:`sfd.pipeline.run.run_plan`): texture VAE -> encoder
features -> SemVAE -> composite latents -> SFD -> samples -> metrics, each stage's result and
wall time in ``OUT/stages.json``, so a rerun resumes where it stopped and never redoes or
overwrites a finished stage. Nothing is matched by hand: the latent grid is the image size over
the texture VAE's downsampling, the encoder runs on that grid, the SemVAE's input is the
features' shape, and SFD's config takes the latent shape, classes and REPA dim from the latent set
(:func:`sfd.training.run_config.fit_to_data`).

Budgets are named stage sizes (``BUDGETS``), each overridable per stage. ``cpu-10min`` is sized
for a small folder on 2 CPU cores; ``gpu-1h`` for one GPU. Neither figure is a measurement of
your data: the wall time of each stage is recorded in ``stages.json``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import typing
from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import Subset

from sfd.config import Config, apply_overrides, parse_value, preset
from sfd.pipeline.stages import StageSizes
from sfd.training.run_config import fit_to_data, override_keys, short_run_ema

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PipelineSettings:
    """Stage sizes of ``sfd pipeline`` (a budget, then ``--stage key=value``)."""

    image_size: int = 64  # pixels; the latent grid is image_size / 4 (the texture VAE is f4)
    channels: int = 3
    max_images: int = 0  # training images used (0: all)
    test_fraction: float = 0.1  # held out for the texture-VAE PSNR and the SemVAE cosine
    texture_steps: int = 300
    texture_batch: int = 16
    semvae_images: int = 5000
    semvae_steps: int = 300
    semvae_width: int = 64
    semvae_depth: int = 2
    sem_channels: int = 4
    encoder_stride: int = 8
    sfd_preset: str = "demo"
    sfd_steps: int = 300
    sfd_batch: int = 32
    num_samples: int = 30
    batch_size: int = 64  # images per extraction batch
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("image_size", "texture_steps", "semvae_steps", "sfd_steps", "sfd_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"stage size {name} must be >= 1; got {getattr(self, name)}")
        if self.image_size % 4:
            raise ValueError(f"image_size must be a multiple of 4 (f4); got {self.image_size}")


BUDGETS: dict[str, PipelineSettings] = {
    "cpu-10min": PipelineSettings(),
    "gpu-1h": PipelineSettings(
        texture_steps=5000,
        texture_batch=64,
        semvae_images=50_000,
        semvae_steps=5000,
        semvae_width=256,
        semvae_depth=4,
        sfd_preset="S",
        sfd_steps=20_000,
        sfd_batch=128,
        num_samples=1000,
        batch_size=256,
    ),
}


# datasets `sfd pipeline --data-root` takes by name instead of a folder
NAMED_DATASETS = ("fashion-mnist", "composites")


def with_stage_overrides(settings: PipelineSettings, items: list[str]) -> PipelineSettings:
    """``settings`` with ``key=value`` stage sizes, each parsed to its field's type."""
    hints = typing.get_type_hints(PipelineSettings)
    changes = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or key not in hints:
            raise ValueError(
                f"--stage {item!r} must be key=value with key one of {', '.join(sorted(hints))}"
            )
        changes[key] = parse_value(raw.strip(), hints[key], key)
    return dataclasses.replace(settings, **changes)


def stage_sizes(p: PipelineSettings, num_classes: int, device: str):
    """The :class:`sfd.pipeline.stages.StageSizes` of ``p``."""
    from sfd.config import SemVAETrainConfig, TextureVAETrainConfig
    from sfd.latents.semvae import SemVAEConfig

    return StageSizes(
        texture=TextureVAETrainConfig(
            total_steps=p.texture_steps,
            batch_size=p.texture_batch,
            warmup_steps=min(100, max(1, p.texture_steps // 10)),
            seed=p.seed,
            device=device,
        ),
        semvae=SemVAEConfig(
            latent_channels=p.sem_channels,
            width=p.semvae_width,
            depth=p.semvae_depth,
            num_heads=2,
        ),
        semvae_train=SemVAETrainConfig(
            total_steps=p.semvae_steps,
            batch_size=32,
            lr=2e-3,
            warmup_steps=min(50, max(1, p.semvae_steps // 10)),
            device=device,
            seed=p.seed,
            log_every=50,
        ),
        semvae_images=p.semvae_images,
        encoder_stride=p.encoder_stride,
        batch_size=p.batch_size,
        num_classes=num_classes,
    )


def open_images(
    data_root: str, p: PipelineSettings, on_error: str
) -> tuple[Subset, Subset, list[str]]:
    """(train, held-out test, class names): ``fashion-mnist`` by name (its test split), else
    an ImageFolder of which every k-th image is held out."""
    from sfd.data.fashion_mnist import DEFAULT_ROOT, FashionMNIST
    from sfd.data.images import ImageFolder
    from sfd.training.texture_vae import holdout_split

    if data_root == "fashion-mnist":
        train = FashionMNIST(DEFAULT_ROOT, "train", p.image_size, p.channels)
        test = FashionMNIST(DEFAULT_ROOT, "test", p.image_size, p.channels)
        n_used = min(p.max_images or len(train), len(train))
        test = Subset(test, range(min(len(test), max(2, round(p.test_fraction * n_used)))))
        names = list(FashionMNIST.classes)
    elif data_root == "composites":  # the garments on photographs (sfd.data.composites)
        from sfd.data.composites import FashionComposites

        if p.channels != 3:
            raise ValueError(f"the composites are RGB: channels must be 3; got {p.channels}")
        kw = {"image_size": p.image_size, "seed": p.seed}
        train = FashionComposites(DEFAULT_ROOT, "train", **kw)
        test = FashionComposites(DEFAULT_ROOT, "test", backgrounds="train", **kw)
        n_used = min(p.max_images or len(train), len(train))
        test = Subset(test, range(min(len(test), max(2, round(p.test_fraction * n_used)))))
        names = list(FashionComposites.classes)
    else:
        mode = {1: "L", 3: "RGB"}[p.channels]
        folder = ImageFolder(data_root, p.image_size, on_error=on_error, mode=mode)
        train, test = holdout_split(folder, p.test_fraction)
        names = folder.classes
    n = len(train) if not p.max_images else min(p.max_images, len(train))
    return Subset(train, range(n)), test, names


def pipeline_config(p: PipelineSettings, latents: Path, overrides: tuple[str, ...]) -> Config:
    """SFD's config: the preset with the budget's run length, fitted to the latent set (its
    shape, classes, REPA dim), the decoder beside the run, then ``--set``."""
    cfg = preset(p.sfd_preset)
    train = dataclasses.replace(
        cfg.train,
        total_steps=p.sfd_steps,
        global_batch_size=p.sfd_batch,
        seed=p.seed,
        ckpt_every=max(p.sfd_steps // 3, 1),
        log_every=max(1, min(25, p.sfd_steps // 10)),
    )
    latent = dataclasses.replace(cfg.latent, texture_autoencoder="../texture_vae")
    cfg = apply_overrides(dataclasses.replace(cfg, train=train, latent=latent), list(overrides))
    explicit = override_keys(overrides)
    meta = json.loads((latents / "meta.json").read_text())
    return short_run_ema(fit_to_data(cfg, meta, explicit, latents), explicit)


def pipeline_plan(
    data_root: str | Path,
    settings: PipelineSettings,
    overrides: tuple[str, ...] = (),
    on_error: str = "raise",
    device: str = "cpu",
):
    """``settings`` on the images of ``data_root`` as a :class:`sfd.pipeline.run.RunPlan`."""
    from sfd.pipeline.run import RunPlan

    p = settings
    train, test, names = open_images(str(data_root), p, on_error)
    return RunPlan(
        train_set=train,
        test_set=test,
        names=tuple(names),
        sizes=stage_sizes(p, len(names), device),
        config=lambda base: pipeline_config(p, base.latents, overrides),
        num_samples=p.num_samples,
        metric_images=p.num_samples,
        probe_images=5000,
        seed=p.seed,
        per_class=max(2, min(10, p.num_samples // max(1, len(names)))),
        in_domain=str(data_root) in NAMED_DATASETS,
        classifier_dataset=str(data_root) if str(data_root) in NAMED_DATASETS else "fashion-mnist",
    )


def run_pipeline(
    data_root: str | Path,
    out: str | Path,
    settings: PipelineSettings,
    overrides: tuple[str, ...] = (),
    on_error: str = "raise",
    device: str = "cpu",
) -> dict:
    """Run (or resume) every stage; returns what ``OUT/metrics.json`` holds."""
    from sfd.pipeline.run import run_plan

    return run_plan(out, pipeline_plan(data_root, settings, overrides, on_error, device), device)
