"""Training the Semantic VAE (docs/METHOD.md §2.2) on encoder-feature shards written by
:func:`sfd.extract.extract_features`, streamed shard by shard through memory maps (shards in a
random order and rows shuffled within a shard, from one seeded generator; never the whole set in
memory).

AdamW (lr 5e-5 as released), linear warm-up, constant, cosine decay over the last 20% of the
steps, shaped as the release's (``tokenizer/semvae/train.py``, ``setup_scheduler``:
``LinearLR(start_factor=0.01)`` over the 500 warm-up steps, then
``CosineAnnealingLR(eta_min=0.1 * lr)``): the warm-up starts at ``warmup_start_factor * lr``
(0.01) and the cosine ends at ``min_lr_factor * lr`` (0.1). A design choice, not a bug, so
matched by default; ``min_lr_factor=0`` decays to 0. One difference is kept: the release's
cosine starts after warm-up + ``constant_steps`` (800,500 of 1M in ``ch16.yaml``), sfd's at
``(1 - decay_fraction) * total_steps`` (800,000), 0.05% of the run earlier.
Loss :func:`sfd.latents.semvae.semvae_loss` with the per-token cosine;
``cos_axis="token"`` trains with the release's token-axis cosine instead (parity only).
Reports held-out reconstruction cosine similarity (per token) and MSE.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

from sfd.config import SemVAETrainConfig
from sfd.data.feature_shards import FeatureShards
from sfd.latents.semvae import SemanticVAE, SemVAEConfig, save_semvae, semvae_loss
from sfd.training.fit import TrainState, fit
from sfd.training.integrity import verify_data
from sfd.training.lr_schedule import lr_at, warn_short_warmup

log = logging.getLogger(__name__)


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


def _verify_inputs(out_dir: str | Path, sets: tuple, verify: bool) -> None:
    """Check the feature sets once for the run in ``out_dir`` (or record the skip)."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    for directory in sets:
        if directory is not None:
            verify_data(directory, out_dir, verify=verify)


def train_semvae(
    feature_dir: str | Path,
    out_dir: str | Path,
    model_config: SemVAEConfig,
    config: SemVAETrainConfig,
    val_dir: str | Path | None = None,
    verify: bool = True,
) -> dict:
    """Train a SemVAE on a feature set; save it to ``out_dir``; return the held-out metrics
    (on the training rows, with ``held_out: False``, when ``holdout_fraction`` is 0 and no
    ``val_dir`` is given). ``model_config.in_dim`` and ``grid`` are taken from the feature set;
    ``verify``: the feature sets checked first (:func:`sfd.training.integrity.verify_data`)."""
    data = FeatureShards(feature_dir)
    _verify_inputs(out_dir, (feature_dir, val_dir), verify)
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

    def step_fn(step: int) -> dict[str, torch.Tensor]:
        features = train.read(*next(picks)).to(config.device)
        noise = torch.randn(
            features.shape[0], model_config.latent_channels, *features.shape[2:], generator=gen
        ).to(config.device)
        recon, mean, logvar = model(features, noise)
        return semvae_loss(recon, features, mean, logvar, config.kl_weight, config.cos_axis)

    lr = partial(semvae_lr, config=config)
    history = fit("semvae", model, opt, step_fn, lr, config, resume, first, history)
    metrics = _held_out_metrics(model, train, held_out, config.device)
    info = {"train": asdict(config), "held_out": metrics, "features": str(feature_dir)}
    # what `sfd extract` checks its encoder against (grid and dim are in the config)
    info["encoder"] = data.meta.get("extraction", {}).get("encoder")
    save_semvae(model, out_dir, {**info, "history": history})
    resume.remove()
    return metrics


def _held_out_metrics(model, train: FeatureShards, held_out, device) -> dict:
    """The trained SemVAE's reconstruction on the held-out rows (on the training rows, marked
    ``held_out: False``, when nothing is held out)."""
    if held_out is None:
        log.warning("semvae: nothing held out (holdout_fraction 0); metrics on training data")
        metrics = {**evaluate_semvae(model, train, device=device), "held_out": False}
    else:
        metrics = evaluate_semvae(model, held_out, device=device)
    log.info("semvae held-out: cos %.4f, mse %.5f", metrics["cos"], metrics["mse"])
    return metrics
