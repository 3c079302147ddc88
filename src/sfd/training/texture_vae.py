"""Training a texture autoencoder: a small diffusers ``AutoencoderKL`` (LDM's KL-VAE, Rombach et
al. 2022) for low-resolution data such as Fashion-MNIST at 32 px (f4: 8 x 8 latents).

Loss: L1 + MSE per pixel plus LDM's KL weighting (``kl_weight`` times the KL summed over the
latent, divided by the pixels of a sample; LDM's 1e-6). No perceptual or adversarial term: LPIPS
needs VGG weights that nothing here installs offline, and the default (a 4-minute CPU run on
Fashion-MNIST) is measured by PSNR, which pixel losses optimise directly; its reconstructions are
recognisable but soft (25.8 dB on the test split). Saved with ``save_pretrained``, so
:func:`sfd.latents.texture.load_texture_autoencoder` loads it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset

from sfd.config import TextureVAETrainConfig
from sfd.data.images import collate_images, first_image_shape
from sfd.data.tensor_files import atomic_files, atomic_write_json
from sfd.latents.texture import KLAutoencoder
from sfd.training.fit import TrainState, fit
from sfd.training.lr_schedule import lr_at, warn_short_warmup

log = logging.getLogger(__name__)


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

    def step_fn(step: int) -> dict[str, torch.Tensor]:
        images = next(batches)
        if config.random_flip:
            flip = torch.rand(images.shape[0], generator=gen) < 0.5
            images = torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)
        return texture_vae_loss(vae, images.to(config.device), gen, config)

    def lr_fn(step: int) -> float:
        return lr_at(
            step, config.total_steps, config.lr, config.warmup_steps, config.decay_fraction
        )

    history = fit("texture vae", vae, opt, step_fn, lr_fn, config, resume, first, history, gen)
    out_dir = Path(out_dir)
    kept = "the training state is intact; a rerun writes them again"
    atomic_files(out_dir, lambda tmp: vae.save_pretrained(str(tmp)), kept)
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
