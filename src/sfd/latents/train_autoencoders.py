"""Training loops for the two autoencoders of SFD's latent space.

- :func:`train_semvae` (METHOD.md §2.2): the Semantic VAE on encoder-feature shards written by
  :func:`sfd.extract.extract_features`, streamed shard by shard through memory maps (shards in
  a random order and rows shuffled within a shard, from one seeded generator; never the whole
  set in memory). AdamW (lr 5e-5 as released), linear warm-up, constant, cosine decay over the
  last 20% of the steps, shaped as the release's (``tokenizer/semvae/train.py``,
  ``setup_scheduler``: ``LinearLR(start_factor=0.01)`` over the 500 warm-up steps, then
  ``CosineAnnealingLR(eta_min=0.1 * lr)``): the warm-up starts at ``warmup_start_factor * lr``
  (0.01) and the cosine ends at ``min_lr_factor * lr`` (0.1). A design choice, not a bug, so
  matched by default; ``min_lr_factor=0`` decays to 0. One difference is kept: the release's
  cosine starts after warm-up + ``constant_steps`` (800,500 of 1M in ``ch16.yaml``), sfd's at
  ``(1 - decay_fraction) * total_steps`` (800,000), 0.05% of the run earlier.
  Loss :func:`sfd.latents.semvae.semvae_loss` with the per-token cosine;
  ``cos_axis="token"`` trains with the release's token-axis cosine instead (parity only).
  Reports held-out reconstruction cosine similarity (per token) and MSE.
- :func:`train_texture_vae`: a small diffusers ``AutoencoderKL`` (LDM's KL-VAE, Rombach et al.
  2022) for low-resolution data such as Fashion-MNIST at 32 px (f4: 8 x 8 latents). Loss:
  L1 + MSE per pixel plus LDM's KL weighting (``kl_weight`` times the KL summed over the latent,
  divided by the pixels of a sample; LDM's 1e-6). No perceptual or adversarial term: LPIPS
  needs VGG weights that nothing here installs offline, and the default (a 4-minute CPU run on
  Fashion-MNIST) is measured by PSNR, which pixel losses optimise directly; its
  reconstructions are recognisable but soft (25.8 dB on the test split). Saved with
  ``save_pretrained``, so :func:`sfd.latents.texture.load_texture_autoencoder` loads it.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset

from sfd.data.images import collate_images, first_image_shape
from sfd.data.shards import MappedShard, atomic_write_json
from sfd.extract import FEATURE_FORMAT
from sfd.latents.semvae import COS_AXES, SemanticVAE, SemVAEConfig, save_semvae, semvae_loss
from sfd.latents.texture import KLAutoencoder

log = logging.getLogger(__name__)


def lr_at(
    step: int,
    total_steps: int,
    lr: float,
    warmup_steps: int,
    decay_fraction: float,
    warmup_start_factor: float | None = None,
    min_lr_factor: float = 0.0,
) -> float:
    """Learning rate at ``step`` (0-based): linear warm-up over ``warmup_steps``, constant, then
    a cosine from ``lr`` down to ``min_lr_factor * lr`` over the last ``decay_fraction`` of
    ``total_steps`` (reached at ``step = total_steps``).

    Warm-up: ``lr * (s + (1 - s) * step / warmup_steps)`` for ``warmup_start_factor`` = s (the
    release's ``LinearLR``: ``s * lr`` at step 0, ``lr`` at ``warmup_steps``); ``None`` keeps
    ``lr * (step + 1) / warmup_steps`` (the texture VAE's, unchanged)."""
    if step < warmup_steps:
        if warmup_start_factor is None:
            return lr * (step + 1) / warmup_steps
        return lr * (warmup_start_factor + (1.0 - warmup_start_factor) * step / warmup_steps)
    decay_start = int(total_steps * (1.0 - decay_fraction))
    if step < decay_start:
        return lr
    progress = min((step - decay_start) / max(1, total_steps - decay_start), 1.0)
    floor = lr * min_lr_factor
    return floor + (lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


# ---------------------------------------------------------------------------------------------
# Feature shards


class FeatureShards:
    """A ``sfd-features`` set, memory-mapped shard by shard (see :mod:`sfd.extract`), or the
    rows ``[start, stop)`` of it (counted over the whole set, shards in order)."""

    def __init__(self, directory: str | Path, start: int = 0, stop: int | None = None) -> None:
        self.directory = Path(directory)
        meta_path = self.directory / "meta.json"
        if not meta_path.exists():
            raise FileNotFoundError(
                f"{self.directory} is not a feature set (no meta.json); "
                f"write one with `sfd extract-features`"
            )
        self.meta = json.loads(meta_path.read_text())
        if self.meta.get("format") != FEATURE_FORMAT:
            raise ValueError(
                f"{meta_path}: format {self.meta.get('format')!r} is not {FEATURE_FORMAT!r}"
            )
        stop = int(self.meta["count"]) if stop is None else stop
        self.shards, self.rows = [], []  # per shard: its memmap and the rows of it we use
        first = 0
        for info in self.meta["shards"]:
            lo, hi = max(start, first), min(stop, first + info["count"])
            if lo < hi:
                self.shards.append(MappedShard(self.directory / info["file"]))
                self.rows.append(range(lo - first, hi - first))
            first += info["count"]
        self.count = sum(len(r) for r in self.rows)
        self.dim, self.grid = int(self.meta["dim"]), int(self.meta["grid"])

    def split(self, fraction: float) -> tuple[FeatureShards, FeatureShards | None]:
        """(train, held-out): the last ``fraction`` of the images (at least one) are held out;
        ``fraction = 0`` holds out nothing (None)."""
        n = int(self.meta["count"])
        if fraction == 0:
            return self, None
        held = max(1, round(fraction * n))
        if not 0 < fraction < 1 or held >= n:
            raise ValueError(
                f"cannot hold out a fraction {fraction} of {n} feature rows; pass a value in "
                f"[0, 1) that leaves training rows (0: no hold-out), or a validation set"
            )
        return FeatureShards(self.directory, 0, n - held), FeatureShards(self.directory, n - held)

    def batches(self, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
        """Endless float32 batches (B, C, h, w) over (row, view) pairs: shards in a random
        order, rows shuffled within each shard."""
        for s, pick in self.picks(batch_size, generator):
            yield self.read(s, pick)

    def picks(self, batch_size: int, generator: torch.Generator) -> Iterator[tuple]:
        """The (shard, flat (row, view) indices) of :meth:`batches`, without reading them."""
        while True:
            for s in torch.randperm(len(self.shards), generator=generator).tolist():
                n, views = len(self.rows[s]), self.shards[s]["features"].shape[1]
                order = torch.randperm(n * views, generator=generator).numpy()
                for start in range(0, len(order), batch_size):
                    yield s, order[start : start + batch_size]

    def read(self, s: int, pick: np.ndarray) -> torch.Tensor:
        features = self.shards[s]["features"]  # (N, V, C, h, w) memmap
        rows, views = self.rows[s], features.shape[1]
        return torch.from_numpy(features[rows.start + pick // views, pick % views]).float()

    def ordered(self, batch_size: int) -> Iterator[torch.Tensor]:
        """Every (row, view) once, in order (for evaluation)."""
        for shard, rows in zip(self.shards, self.rows, strict=True):
            features = shard["features"][rows.start : rows.stop]
            flat = features.reshape(-1, *features.shape[2:])
            for start in range(0, len(flat), batch_size):
                yield torch.from_numpy(np.array(flat[start : start + batch_size], np.float32))


@dataclass(frozen=True)
class SemVAETrainConfig:
    total_steps: int = 1_000_000
    batch_size: int = 64
    lr: float = 5e-5
    weight_decay: float = 0.01  # torch's AdamW default
    warmup_steps: int = 500
    # warm-up from this x lr: the release's LinearLR; None: lr * (step + 1) / warmup_steps (the
    # schedule sfd used before, kept for runs measured with it, e.g. the demo's)
    warmup_start_factor: float | None = 0.01
    decay_fraction: float = 0.2  # cosine decay over this last fraction of the steps
    min_lr_factor: float = 0.1  # the cosine's floor, x lr: the release's eta_min
    kl_weight: float = 1e-7
    cos_axis: str = "channel"  # per-token cosine; "token": the release's (METHOD.md §2.2)
    # the last fraction of the images held out when no validation set is given (0: none)
    holdout_fraction: float = 0.05
    seed: int = 0
    log_every: int = 100
    ckpt_every: int = 1000  # resume state (out/.train_state) every N steps; a rerun resumes
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.cos_axis not in COS_AXES:
            raise ValueError(f"cos_axis must be one of {COS_AXES}; got {self.cos_axis!r}")
        if self.warmup_start_factor is not None and not 0.0 < self.warmup_start_factor <= 1.0:
            raise ValueError(
                f"warmup_start_factor must be in (0, 1]; got {self.warmup_start_factor}"
            )
        if not 0.0 <= self.min_lr_factor <= 1.0:
            raise ValueError(f"min_lr_factor must be in [0, 1]; got {self.min_lr_factor}")


def warn_short_warmup(name: str, warmup_steps: int, total_steps: int) -> None:
    """A warm-up as long as the run never reaches the learning rate: say so."""
    if warmup_steps >= total_steps:
        log.warning(
            "%s: warm-up (%d steps) >= total steps (%d): the run never reaches its lr",
            name,
            warmup_steps,
            total_steps,
        )


def semvae_lr(step: int, config: SemVAETrainConfig) -> float:
    """The SemVAE's learning rate at ``step`` (module docstring)."""
    return lr_at(
        step,
        config.total_steps,
        config.lr,
        config.warmup_steps,
        config.decay_fraction,
        config.warmup_start_factor,
        config.min_lr_factor,
    )


@torch.no_grad()
def evaluate_semvae(
    model: SemanticVAE, shards: FeatureShards, batch_size: int = 256, device: str = "cpu"
) -> dict[str, float]:
    """Held-out reconstruction from the posterior mean: mean per-token cosine similarity and
    MSE over every token of every (row, view)."""
    was_training = model.training
    model.eval()
    cos_sum = mse_sum = 0.0
    tokens = elements = 0
    for features in shards.ordered(batch_size):
        features = features.to(device)
        recon = model(features)[0]
        cos_sum += F.cosine_similarity(recon, features, dim=1).sum().item()
        mse_sum += (recon - features).square().sum().item()
        tokens += features[:, 0].numel()
        elements += features.numel()
    model.train(was_training)
    return {"cos": cos_sum / tokens, "mse": mse_sum / elements}


def train_semvae(
    feature_dir: str | Path,
    out_dir: str | Path,
    model_config: SemVAEConfig,
    config: SemVAETrainConfig,
    val_dir: str | Path | None = None,
) -> dict:
    """Train a SemVAE on a feature set; save it to ``out_dir``; return the held-out metrics
    (on the training rows, with ``held_out: False``, when ``holdout_fraction`` is 0 and no
    ``val_dir`` is given). ``model_config.in_dim`` and ``grid`` are taken from the feature set."""
    data = FeatureShards(feature_dir)
    train, held_out = (
        (data, FeatureShards(val_dir))
        if val_dir is not None
        else data.split(config.holdout_fraction)
    )
    warn_short_warmup("semvae", config.warmup_steps, config.total_steps)
    model_config = replace(model_config, in_dim=data.dim, grid=data.grid)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = SemanticVAE(model_config).to(config.device)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    gen = torch.Generator().manual_seed(config.seed)
    picks = train.picks(config.batch_size, gen)
    resume = TrainState(out_dir, config)
    first, history = resume.load(model, opt)
    for _ in range(first):  # replay the generator's draws (indices and noise; no data read)
        _, pick = next(picks)
        torch.randn(len(pick), model_config.latent_channels, data.grid, data.grid, generator=gen)
    for step in range(first, config.total_steps):
        if step > first and step % config.ckpt_every == 0:
            resume.save(step, model, opt, history)
        for group in opt.param_groups:
            group["lr"] = semvae_lr(step, config)
        features = train.read(*next(picks)).to(config.device)
        noise = torch.randn(
            features.shape[0], model_config.latent_channels, *features.shape[2:], generator=gen
        ).to(config.device)
        recon, mean, logvar = model(features, noise)
        terms = semvae_loss(recon, features, mean, logvar, config.kl_weight, config.cos_axis)
        opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        opt.step()
        if step % config.log_every == 0 or step == config.total_steps - 1:
            row = {"step": step, **{k: round(v.item(), 6) for k, v in terms.items()}}
            history.append(row)
            log.info("semvae %s", row)
    if first < config.total_steps:
        resume.save(config.total_steps, model, opt, history)
    if held_out is None:
        log.warning("semvae: nothing held out (holdout_fraction 0); metrics on training data")
        metrics = {**evaluate_semvae(model, train, device=config.device), "held_out": False}
    else:
        metrics = evaluate_semvae(model, held_out, device=config.device)
    log.info("semvae held-out: cos %.4f, mse %.5f", metrics["cos"], metrics["mse"])
    save_semvae(
        model,
        out_dir,
        {
            "train": asdict(config),
            "held_out": metrics,
            "features": str(feature_dir),
            # what `sfd extract` checks its encoder against (grid and dim are in the config)
            "encoder": data.meta.get("extraction", {}).get("encoder"),
            "history": history,
        },
    )
    resume.remove()
    return metrics


# ---------------------------------------------------------------------------------------------
# Texture VAE


@dataclass(frozen=True)
class TextureVAETrainConfig:
    block_out_channels: tuple[int, ...] = (16, 32, 32)  # 3 levels: f4
    latent_channels: int = 4
    layers_per_block: int = 1
    norm_num_groups: int = 8
    total_steps: int = 600  # about 4 minutes on 2 CPU cores (Fashion-MNIST, 32 px)
    batch_size: int = 32
    lr: float = 3e-3
    warmup_steps: int = 100
    decay_fraction: float = 0.5
    l1_weight: float = 1.0
    l2_weight: float = 1.0
    kl_weight: float = 1e-6  # LDM's, on the KL summed over the latent per pixel
    random_flip: bool = True
    seed: int = 0
    log_every: int = 100
    ckpt_every: int = 100  # resume state (out/.train_state) every N steps; a rerun resumes
    num_workers: int = 0
    device: str = "cpu"


def build_texture_vae(
    image_channels: int, config: TextureVAETrainConfig, image_size: int | None = None
):
    """A fresh diffusers ``AutoencoderKL`` (no attention in the down/up blocks) for images of
    ``image_size`` pixels (recorded as its ``sample_size``; diffusers' default 32 if None)."""
    from diffusers import AutoencoderKL

    n = len(config.block_out_channels)
    return AutoencoderKL(
        in_channels=image_channels,
        out_channels=image_channels,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(config.block_out_channels),
        layers_per_block=config.layers_per_block,
        latent_channels=config.latent_channels,
        norm_num_groups=config.norm_num_groups,
        scaling_factor=1.0,
        **({"sample_size": int(image_size)} if image_size else {}),
    )


def texture_vae_loss(
    vae, images: torch.Tensor, generator: torch.Generator, config: TextureVAETrainConfig
) -> dict[str, torch.Tensor]:
    posterior = vae.encode(images).latent_dist
    noise = torch.randn(posterior.mean.shape, generator=generator).to(images.device)
    recon = vae.decode(posterior.mean + posterior.std * noise).sample
    l1 = (recon - images).abs().mean()
    l2 = (recon - images).square().mean()
    kl = posterior.kl().mean() / images[0].numel()
    loss = config.l1_weight * l1 + config.l2_weight * l2 + config.kl_weight * kl
    return {"loss": loss, "l1": l1, "l2": l2, "kl": kl}


@torch.no_grad()
def reconstruction_psnr(
    autoencoder: KLAutoencoder,
    dataset,
    batch_size: int = 256,
    limit: int | None = None,
    device: str = "cpu",
) -> float:
    """Mean PSNR (dB, peak-to-peak 2 on [-1, 1]) of ``decode(posterior mean)`` clamped to
    [-1, 1], over the first ``limit`` images (all by default)."""
    count = len(dataset) if limit is None else min(limit, len(dataset))
    loader = DataLoader(
        Subset(dataset, range(count)), batch_size=batch_size, collate_fn=collate_images
    )
    psnrs = []
    for images, _ in loader:
        images = images.to(device)
        recon = autoencoder.decode(autoencoder.encode(images)[0]).clamp(-1, 1)
        mse = (recon - images).square().flatten(1).mean(1)
        psnrs.append(10 * torch.log10(4.0 / mse.clamp_min(1e-10)))
    return torch.cat(psnrs).mean().item()


def _index_batches(n: int, batch_size: int, seed: int) -> Iterator[list[int]]:
    """Endless index batches, exactly those of ``DataLoader(shuffle=True, drop_last=True,
    generator=Generator().manual_seed(seed))`` epoch after epoch (the order the texture VAE
    trained on before it could resume), drawn without reading any image."""
    loader = DataLoader(
        range(n),
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        generator=torch.Generator().manual_seed(seed),
        collate_fn=list,
    )
    while True:
        yielded = False
        for batch in loader:
            yielded = True
            yield batch
        if not yielded:
            raise ValueError(f"{n} images are fewer than one batch of {batch_size}")


class TrainState:
    """Mid-run state of an autoencoder training in ``OUT/.train_state`` (model, optimizer,
    generator, step, history), written atomically; a rerun with the same settings resumes
    from it bit for bit, and it is removed once the outputs are written."""

    RESUMABLE = ("ckpt_every", "log_every", "num_workers", "device")

    def __init__(self, out_dir: str | Path, config) -> None:
        self.dir = Path(out_dir) / ".train_state"
        self.settings = {
            k: v for k, v in json.loads(json.dumps(asdict(config))).items()
            if k not in self.RESUMABLE
        }  # fmt: skip
        self.generator_state: torch.Tensor | None = None

    def load(self, model: torch.nn.Module, opt: torch.optim.Optimizer) -> tuple[int, list]:
        """(first step, history) of the saved state, or (0, []); fills model and optimizer."""
        from sfd.errors import MismatchError, load_safetensors
        from sfd.training.checkpoint import load_optimizer_tensors

        for tmp in self.dir.parent.glob(".train_state.tmp*"):  # a save cut by a kill
            __import__("shutil").rmtree(tmp, ignore_errors=True)
        old = self.dir.with_name(".train_state.old")
        if not self.dir.exists() and (old / "state.json").exists():
            old.rename(self.dir)  # killed between the two renames of save()
        info_path = self.dir / "state.json"
        if not info_path.exists():
            return 0, []
        info = json.loads(info_path.read_text())
        if info["settings"] != self.settings:
            diffs = sorted(k for k in self.settings if info["settings"].get(k) != self.settings[k])
            raise MismatchError(
                f"{self.dir.parent} holds a training run with other settings "
                f"({', '.join(diffs)}); use a new --out or the same settings"
            )
        model.load_state_dict(load_safetensors(self.dir / "model.safetensors"), strict=True)
        load_optimizer_tensors(opt, self.dir / "optimizer.safetensors")
        self.generator_state = torch.tensor(info["generator"], dtype=torch.uint8)
        log.info("resuming from %s (step %d)", self.dir, info["step"])
        return int(info["step"]), info["history"]

    def save(self, step, model, opt, history, generator: torch.Generator | None = None) -> None:
        import os
        import shutil

        from sfd.data.shards import atomic_save_safetensors
        from sfd.training.checkpoint import optimizer_tensors

        tmp = self.dir.with_name(f".train_state.tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            atomic_save_safetensors(tmp / "model.safetensors", model.state_dict())
            tensors, groups = optimizer_tensors(opt)
            atomic_save_safetensors(tmp / "optimizer.safetensors", tensors,
                                    {"param_groups": groups})  # fmt: skip
            state = generator.get_state().tolist() if generator is not None else []
            atomic_write_json(tmp / "state.json", {"step": step, "settings": self.settings,
                              "generator": state, "history": history})  # fmt: skip
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        old = self.dir.with_name(".train_state.old")
        shutil.rmtree(old, ignore_errors=True)
        if self.dir.exists():
            self.dir.rename(old)
        os.replace(tmp, self.dir)
        shutil.rmtree(old, ignore_errors=True)

    def remove(self) -> None:
        import shutil

        shutil.rmtree(self.dir, ignore_errors=True)


def _endless(loader: DataLoader) -> Iterator[torch.Tensor]:
    while True:
        for images, _ in loader:
            if len(images):
                yield images


def train_texture_vae(
    dataset, out_dir: str | Path, config: TextureVAETrainConfig, test_dataset=None
) -> dict:
    """Train, save (``save_pretrained``) and evaluate a texture VAE; returns the metrics
    (test PSNR when ``test_dataset`` is given)."""
    start = time.time()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        shape = first_image_shape(dataset)
        vae = build_texture_vae(shape[0], config, shape[-1])
    warn_short_warmup("texture vae", config.warmup_steps, config.total_steps)
    vae = vae.to(config.device).train()
    opt = torch.optim.AdamW(vae.parameters(), lr=config.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(config.seed)
    resume = TrainState(out_dir, config)
    first, history = resume.load(vae, opt)
    if first:
        gen.set_state(resume.generator_state)
    order = _index_batches(len(dataset), config.batch_size, config.seed)
    for _ in range(first):
        next(order)
    loader = DataLoader(
        dataset,
        batch_sampler=order,
        generator=torch.Generator(),
        num_workers=config.num_workers,
        collate_fn=collate_images,
    )
    batches = _endless(loader)
    for step in range(first, config.total_steps):
        if step > first and step % config.ckpt_every == 0:
            resume.save(step, vae, opt, history, gen)
        for group in opt.param_groups:
            group["lr"] = lr_at(
                step, config.total_steps, config.lr, config.warmup_steps, config.decay_fraction
            )
        images = next(batches)
        if config.random_flip:
            flip = torch.rand(images.shape[0], generator=gen) < 0.5
            images = torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)
        terms = texture_vae_loss(vae, images.to(config.device), gen, config)
        opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        opt.step()
        if step % config.log_every == 0 or step == config.total_steps - 1:
            row = {"step": step, **{k: round(v.item(), 6) for k, v in terms.items()}}
            history.append(row)
            log.info("texture vae %s", row)
    if first < config.total_steps:
        resume.save(config.total_steps, vae, opt, history, gen)
    out_dir = Path(out_dir)
    vae.save_pretrained(str(out_dir))
    metrics = {"train_seconds": round(time.time() - start, 1)}
    if test_dataset is not None:
        frozen = KLAutoencoder(vae, {"format": "diffusers", "path": str(out_dir)})
        metrics["test_psnr"] = reconstruction_psnr(frozen, test_dataset, device=config.device)
        log.info("texture vae test PSNR %.2f dB", metrics["test_psnr"])
    atomic_write_json(
        out_dir / "train_info.json",
        {"train": asdict(config), "metrics": metrics, "history": history},
    )
    resume.remove()
    return metrics


def holdout_split(dataset, fraction: float) -> tuple[Subset, Subset]:
    """(train, held-out): the held-out part is every ``round(1 / fraction)``-th image (at least
    one image), so each class of a class-sorted folder keeps its share."""
    n = len(dataset)
    if not 0 < fraction < 1 or n < 2:
        raise ValueError(f"cannot hold out a fraction {fraction} of {n} images; use (0, 1)")
    every = max(2, round(1 / fraction))
    held = list(range(every - 1, n, every)) or [n - 1]
    keep = sorted(set(range(n)) - set(held))
    return Subset(dataset, keep), Subset(dataset, held)
