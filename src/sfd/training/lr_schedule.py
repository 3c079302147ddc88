"""Learning-rate schedules of the autoencoder trainers (:mod:`sfd.training.semvae_fit`,
:mod:`sfd.training.texture_vae`): linear warm-up, constant, cosine decay (the SemVAE's is shaped
as the release's ``tokenizer/semvae/train.py``, ``setup_scheduler``; see that module)."""

from __future__ import annotations

import logging
import math

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


def warn_short_warmup(name: str, warmup_steps: int, total_steps: int) -> None:
    """A warm-up as long as the run never reaches the learning rate: say so."""
    if warmup_steps >= total_steps:
        log.warning(
            "%s: warm-up (%d steps) >= total steps (%d): the run never reaches its lr",
            name,
            warmup_steps,
            total_steps,
        )
