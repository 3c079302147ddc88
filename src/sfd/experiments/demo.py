"""``sfd demo``: the whole of SFD on Fashion-MNIST, offline, on a CPU (the embedded default).

Stages, each cached in the run directory so a rerun resumes where it stopped:

1. ``texture_vae``  train a small KL autoencoder: 32x32 images -> 4 x 8 x 8 texture latents;
2. ``features``     frozen EfficientNet-Lite0 maps of training images (both flips) for the SemVAE;
3. ``semvae``       train the Semantic VAE: encoder features -> C_s x 8 x 8 semantic latents;
4. ``latents``      extract composite latents + REPA targets of the training images (shards);
5. ``sfd``          train SFD (the ``demo`` preset) on those latents;
6. ``samples``      class-conditional samples with the three-stage sampler, decoded; the pictures;
7. ``metrics``      Fréchet distance in EfficientNet-Lite0 features, a probe classifier's accuracy
                    on samples vs real images, the in-domain FD_FMNIST, PSNR, SemVAE cosine.

The demo is ``sfd pipeline`` on Fashion-MNIST with these sizes: :func:`demo_plan` is its
:class:`sfd.experiments.run.RunPlan` and :func:`sfd.experiments.run.run_plan` runs it, the same code
that runs ``sfd pipeline`` on a folder of images.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Subset

from sfd.config import (
    Config,
    SemVAETrainConfig,
    TextureVAETrainConfig,
    apply_overrides,
    preset,
)
from sfd.data.composites import FashionComposites
from sfd.data.fashion_mnist import FashionMNIST
from sfd.experiments.stages import StagedBase, StageSizes, prepare_stages
from sfd.hardware import missing_compiler
from sfd.latents.semvae import SemVAEConfig

log = logging.getLogger("sfd.demo")


# The SFD backbone of the demo and of the ablation grid: the `demo` preset narrowed to width 128,
# depth 4 (1.3M parameters, ~6x fewer FLOPs per step than the preset's 7.5M), so that the demo
# trains ~5x more steps in the same minutes; more steps, not width, is what its samples lacked
# (docs/ABLATION.md: FD_FMNIST still falls steeply at 1,000 steps).
DEMO_MODEL: tuple[str, ...] = (
    "model.width=128",
    "model.depth=4",
    "model.num_heads=2",
    "model.repa_projector_dim=128",
)


# The SFD model, latent and run of the demo start from the `demo` preset (sfd.config.presets),
# the one place that states them; DemoSettings holds only what the demo changes.
_PRESET = preset("demo")
EMBEDDED_DATASETS = ("fashion-mnist", "composites")


@dataclass(frozen=True)
class DemoSettings:
    """Sizes of the demo; ``quick()`` is the small version the test suite runs. SFD's batch and
    semantic channels are the ``demo`` preset's unless changed here."""

    train_images: int = 10_000  # images (and their flips) whose latents SFD learns from
    semvae_images: int = 5_000
    test_images: int = 2_000  # held out: texture-VAE PSNR, SemVAE cosine, real-image metrics
    metric_images: int = 1000  # samples and real images per Fréchet distance / accuracy
    probe_images: int = 5_000  # real training images the probe classifier learns from
    texture_steps: int = 250
    semvae_steps: int = 400
    sfd_steps: int = 3000  # the grid's sfd curve flattens: FD_FMNIST 58.2 at 3,000, 59.4 at 4,000
    sfd_batch: int = _PRESET.train.global_batch_size
    model: tuple[str, ...] = DEMO_MODEL  # `--set` overrides of the `demo` preset's backbone
    # CFG on texture and semantics, chosen on FD_FMNIST: on the grid's sfd run (seed 0) CFG 2
    # gave the lowest FD at 2,000 and 4,000 steps (55.3 / 53.6; CFG 3 56.9, CFG 4 60.4 / 63.9)
    cfg_scale: float = 2.0
    sem_channels: int = _PRESET.latent.sem_channels
    encoder_stride: int = 8
    batch_size: int = 128
    seed: int = 0
    # SFD's blocks compiled (CPU with a C++ compiler only): on 2 cores the demo's 3,000 steps
    # train ~1.5x faster after ~25 s of compiling (docs/PERFORMANCE.md); `quick` stays eager
    compile: bool = True
    overrides: tuple[str, ...] = ()
    # the embedded dataset: Fashion-MNIST, or its garments on photographs (sfd.data.composites:
    # the testbed where the texture latent carries little of the class), with its options
    dataset: str = "fashion-mnist"
    background_strength: float = 0.6

    def __post_init__(self) -> None:
        if self.dataset not in EMBEDDED_DATASETS:
            raise ValueError(
                f"unknown dataset {self.dataset!r}; expected one of {', '.join(EMBEDDED_DATASETS)}"
            )
        if not 0.0 <= self.background_strength <= 1.0:
            raise ValueError(
                f"background_strength must be in [0, 1]; got {self.background_strength}"
            )

    @classmethod
    def quick(cls) -> DemoSettings:
        return cls(
            compile=False,
            train_images=512,
            semvae_images=512,
            test_images=256,
            metric_images=100,
            probe_images=512,
            texture_steps=30,
            semvae_steps=30,
            sfd_steps=30,
            sfd_batch=16,
        )


def sfd_config(s: DemoSettings, encoder_dim: int, compile: bool = False) -> Config:
    """The ``demo`` preset fitted to the data (REPA dim, semantic channels, decoder), with the
    demo's run length, guidance and ``train.compile``, then its backbone and ``--set``
    overrides."""
    cfg = preset("demo")
    cfg = dataclasses.replace(
        cfg,
        model=dataclasses.replace(cfg.model, repa_dim=encoder_dim),
        latent=dataclasses.replace(
            cfg.latent, sem_channels=s.sem_channels, texture_autoencoder="../texture_vae"
        ),
        train=dataclasses.replace(
            cfg.train,
            total_steps=s.sfd_steps,
            global_batch_size=s.sfd_batch,
            seed=s.seed,
            ckpt_every=max(s.sfd_steps // 3, 1),
            log_every=10,
            compile=compile,
        ),
        sample=dataclasses.replace(
            cfg.sample, cfg_scale_tex=s.cfg_scale, cfg_scale_sem=s.cfg_scale
        ),
    )
    return apply_overrides(cfg, [*s.model, *s.overrides])


def demo_stage_sizes(s: DemoSettings, device: str) -> StageSizes:
    """The demo's stage sizes (its measured settings)."""
    return StageSizes(
        texture=TextureVAETrainConfig(total_steps=s.texture_steps, seed=s.seed, device=device),
        # LayerNorm eps and LR schedule as the demo's documented numbers were measured with
        # (the library defaults now follow the release: eps 1e-5, warm-up from 0.01 x lr,
        # cosine floor 0.1 x lr)
        semvae=SemVAEConfig(
            latent_channels=s.sem_channels, width=64, depth=2, num_heads=2, layer_norm_eps=1e-6
        ),
        semvae_train=SemVAETrainConfig(
            total_steps=s.semvae_steps,
            batch_size=32,
            lr=2e-3,
            warmup_steps=50,
            warmup_start_factor=None,
            min_lr_factor=0.0,
            device=device,
            seed=s.seed,
            log_every=50,
        ),
        semvae_images=s.semvae_images,
        encoder_stride=s.encoder_stride,
        batch_size=s.batch_size,
        num_classes=10,
    )


def demo_compiles(s: DemoSettings, device: str) -> bool:
    """Whether the demo compiles SFD's blocks: asked for, on CPU (the only device where it was
    measured to pay), and a C++ compiler is there (else it trains eager and says so)."""
    if not s.compile or torch.device(device).type != "cpu":
        return False
    why = missing_compiler(device)
    if why:
        log.warning("%s: SFD trains eager (slower, the same results up to fp32 rounding)", why)
    return why is None


# The composites need a longer-trained texture VAE: at the demo's 250 steps its decoder blurs
# most garments away (the in-domain classifier reads 28.9% of its reconstructions against 77.2%
# of real images); at 1,500 it reads 53.3% (docs/ABLATION.md, "A second testbed").
COMPOSITES_TEXTURE_STEPS = 1500


def for_dataset(s: DemoSettings) -> DemoSettings:
    """The full-size demo's settings for its dataset: the composites' longer texture VAE."""
    if s.dataset == "composites" and s.texture_steps == DemoSettings.texture_steps:
        return dataclasses.replace(s, texture_steps=COMPOSITES_TEXTURE_STEPS)
    return s


def embedded_sets(s: DemoSettings, data_root: str | Path | None = None) -> tuple[Subset, Subset]:
    """The training and held-out images of the embedded dataset. For the composites the
    held-out garments lie on the training photographs: what the generators and the metrics
    compare with is the distribution SFD learns (the probes use the test photographs)."""
    kw = {"root": data_root} if data_root else {}
    if s.dataset == "composites":
        opts = {"background_strength": s.background_strength, "seed": s.seed, **kw}
        train = FashionComposites(split="train", **opts)
        test = FashionComposites(split="test", backgrounds="train", **opts)
    else:
        train, test = FashionMNIST(split="train", **kw), FashionMNIST(split="test", **kw)
    return Subset(train, range(s.train_images)), Subset(test, range(s.test_images))


def demo_plan(settings: DemoSettings, data_root: str | Path | None = None, device: str = "cpu"):
    """The demo as a :class:`sfd.experiments.run.RunPlan`: the embedded dataset with its sizes."""
    # lazy: a run times its stages with the benchmark (torch.distributed.checkpoint, ~1.5 s)
    from sfd.experiments.run import RunPlan

    s = settings
    compile = demo_compiles(s, device)
    train_set, test_set = embedded_sets(s, data_root)
    return RunPlan(
        train_set=train_set,
        test_set=test_set,
        names=tuple(FashionMNIST.classes),
        sizes=demo_stage_sizes(s, device),
        config=lambda base: sfd_config(s, base.encoder_dim, compile),
        num_samples=max(s.metric_images, 100),
        metric_images=s.metric_images,
        probe_images=s.probe_images,
        seed=s.seed,
        sample_batch=50,
        picture_class=7,  # a sneaker
        in_domain=True,
        classifier_dataset=s.dataset,
    )


def prepare_base(
    out: str | Path,
    settings: DemoSettings,
    data_root: str | Path | None = None,
    device: str = "cpu",
) -> StagedBase:
    """Run (or resume) the demo's data stages 1-4 on Fashion-MNIST (the ablation grid's)."""
    plan = demo_plan(settings, data_root, device)
    return prepare_stages(out, plan.train_set, plan.test_set, plan.sizes, device)


def run_demo(
    out: str | Path,
    settings: DemoSettings,
    data_root: str | Path | None = None,
    device: str = "cpu",
    redo: bool = False,
) -> dict:
    """Run (or resume) every stage; returns the metrics written to ``metrics.json``. A stage
    made with other settings is refused, or with ``redo`` recomputed with every stage after it."""
    # lazy: a run times its stages with the benchmark (torch.distributed.checkpoint, ~1.5 s)
    from sfd.experiments.run import run_plan

    return run_plan(out, demo_plan(settings, data_root, device), device, redo)
