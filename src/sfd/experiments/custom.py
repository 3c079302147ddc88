"""``sfd pipeline``: SFD end to end on your own images (an ImageFolder, or Fashion-MNIST).

The code path of ``sfd demo`` (:func:`sfd.experiments.run.run_plan`): texture VAE -> encoder
features -> SemVAE -> composite latents -> SFD -> samples -> metrics, each stage's result and
wall time in ``OUT/stages.json``, so a rerun resumes where it stopped and never redoes or
overwrites a finished stage. Nothing is matched by hand: the latent grid is the image size over
the texture VAE's downsampling, the encoder runs on that grid, the SemVAE's input is the
features' shape, and SFD's config takes the latent shape, classes and REPA dim from the latent set
(:func:`sfd.training.run_config.fit_to_data`).

Budgets are named stage sizes (``BUDGETS``), each overridable per stage: ``small`` (a few
hundred steps per stage, the ``demo`` model; for a small folder on a CPU) and ``large``
(thousands, the ``S`` model; for one GPU). Their old names ``cpu-10min`` and ``gpu-1h`` are
accepted (``BUDGET_ALIASES``): the time depends on the machine and the images, so the pipeline
measures a few steps of each stage and prints an estimate before it starts
(:mod:`sfd.experiments.estimate`), and records each stage's wall time in ``stages.json``.

The held-out images are stratified by class (:func:`stratified_split`): every class of two
images or more gives its share, and they are ordered so that any prefix holds the classes in
proportion (the metrics' reference and floor sets are such prefixes).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import typing
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import Subset

from sfd.config import (
    Config,
    SemVAETrainConfig,
    TextureVAETrainConfig,
    apply_overrides,
    parse_value,
    preset,
)
from sfd.data.composites import FashionComposites
from sfd.data.fashion_mnist import DEFAULT_ROOT, FashionMNIST
from sfd.data.images import IMAGE_EXTENSIONS, ImageFolder
from sfd.errors import BadInputError
from sfd.experiments.stages import StageSizes
from sfd.latents.semvae import SemVAEConfig
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
    "small": PipelineSettings(),
    "large": PipelineSettings(
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

# The budgets' first names promised times they did not keep on every machine and folder.
BUDGET_ALIASES = {"cpu-10min": "small", "gpu-1h": "large"}


def budget(name: str) -> PipelineSettings:
    """The stage sizes of budget ``name`` (or of an old name, with a note)."""
    if name in BUDGET_ALIASES:
        new = BUDGET_ALIASES[name]
        log.warning(
            "--budget %s is the old name of %s (the same sizes; its time depends on the machine "
            "and the images: see the estimate below)",
            name,
            new,
        )
        name = new
    if name not in BUDGETS:
        raise ValueError(f"unknown budget {name!r}; choose from {', '.join(BUDGETS)}")
    return BUDGETS[name]


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


def stage_sizes(p: PipelineSettings, num_classes: int, device: str, images: int | None = None):
    """The :class:`sfd.experiments.stages.StageSizes` of ``p`` (the texture VAE's batch at most
    the ``images`` trained on)."""
    return StageSizes(
        texture=TextureVAETrainConfig(
            total_steps=p.texture_steps,
            batch_size=min(p.texture_batch, images or p.texture_batch),
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


def stratified_split(labels: list[int], fraction: float) -> tuple[list[int], list[int]]:
    """(train, held-out) indices: each class of n >= 2 images holds out
    ``min(n // 2, max(round(fraction * n), 1, 2 if n >= 4 else 0))`` images spread over its
    files (a class of one image holds out none); the held-out list is ordered so that every
    prefix holds the classes in proportion."""
    by_class: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(int(label), []).append(i)
    held: list[tuple[float, int, int]] = []
    for c, idx in by_class.items():
        n = len(idx)
        k = min(n // 2, max(round(fraction * n), 1, 2 if n >= 4 else 0))
        held += [((j + 0.5) / k, c, idx[int((j + 0.5) * n / k)]) for j in range(k)]
    test = [i for _, _, i in sorted(held)]
    chosen = set(test)
    return [i for i in range(len(labels)) if i not in chosen], test


def check_folder(folder) -> None:
    """Refuse, before any work, a folder the pipeline cannot use (one line naming why)."""
    counts = Counter(label for _, label in folder.samples)
    empty = [name for c, name in enumerate(folder.classes) if counts[c] == 0]
    if empty:
        raise BadInputError(
            f"{folder.root}: class folder(s) {', '.join(empty)} hold no image files "
            f"({', '.join(IMAGE_EXTENSIONS)}); add images or remove the folder(s)"
        )
    if len(folder) < 3:
        raise BadInputError(
            f"{folder.root} holds {len(folder)} image file(s); the pipeline needs at least 3 "
            "(some to train on, some held out to measure)"
        )


def open_images(
    data_root: str, p: PipelineSettings, on_error: str
) -> tuple[Subset, Subset, list[str]]:
    """(train, held-out test, class names): ``fashion-mnist`` by name (its test split), else
    an ImageFolder of which each class holds out its share (:func:`stratified_split`)."""
    if data_root == "fashion-mnist":
        train = FashionMNIST(DEFAULT_ROOT, "train", p.image_size, p.channels)
        test = FashionMNIST(DEFAULT_ROOT, "test", p.image_size, p.channels)
        n_used = min(p.max_images or len(train), len(train))
        test = Subset(test, range(min(len(test), max(2, round(p.test_fraction * n_used)))))
        names = list(FashionMNIST.classes)
    elif data_root == "composites":  # the garments on photographs (sfd.data.composites)
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
        try:
            folder = ImageFolder(data_root, p.image_size, on_error=on_error, mode=mode)
        except ValueError as err:  # no class folders, no image files: a bad --data-root
            raise BadInputError(str(err)) from None
        check_folder(folder)
        keep, held = stratified_split([label for _, label in folder.samples], p.test_fraction)
        train, test = Subset(folder, keep), Subset(folder, held)
        names = folder.classes
    n = len(train) if not p.max_images else min(p.max_images, len(train))
    spread = [int((i + 0.5) * len(train) / n) for i in range(n)]  # every class in proportion
    return Subset(train, spread), test, names


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
    """``settings`` on the images of ``data_root`` as a :class:`sfd.experiments.run.RunPlan`."""
    # lazy: a run times its stages with the benchmark (torch.distributed.checkpoint, ~1.5 s)
    from sfd.experiments.run import RunPlan

    p = settings
    train, test, names = open_images(str(data_root), p, on_error)
    return RunPlan(
        train_set=train,
        test_set=test,
        names=tuple(names),
        sizes=stage_sizes(p, len(names), device, len(train)),
        config=lambda base: pipeline_config(p, base.latents, overrides),
        num_samples=p.num_samples,
        metric_images=p.num_samples,
        probe_images=5000,
        seed=p.seed,
        per_class=max(2, min(10, p.num_samples // max(1, len(names)))),
        in_domain=str(data_root) in NAMED_DATASETS,
        classifier_dataset=str(data_root) if str(data_root) in NAMED_DATASETS else "fashion-mnist",
        match_classes=True,
    )


def run_pipeline(
    data_root: str | Path,
    out: str | Path,
    settings: PipelineSettings,
    overrides: tuple[str, ...] = (),
    on_error: str = "raise",
    device: str = "cpu",
    redo: bool = False,
) -> dict:
    """Run (or resume) every stage; returns what ``OUT/metrics.json`` holds. A stage made with
    other settings is refused, or with ``redo`` recomputed with every stage after it."""
    # lazy: a run times its stages with the benchmark (torch.distributed.checkpoint, ~1.5 s)
    from sfd.experiments.run import run_plan

    plan = pipeline_plan(data_root, settings, overrides, on_error, device)
    return run_plan(out, plan, device, redo)
