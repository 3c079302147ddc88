"""Named presets (docs/METHOD.md §2.5): LightningDiT widths/depths/heads, as in Pan et al. 2026 and
Yao et al. 2025 ("Reconstruction vs. Generation", LightningDiT)."""

from __future__ import annotations

from typing import Any

from sfd.config.sections import Config, LatentConfig, ModelConfig, SampleConfig, TrainConfig

# --------------------------------------------------------------------------------------------
# Presets (docs/METHOD.md §2.5). Parameter counts at 48 input channels: S ~33M, B 130M, L 458M,
# XL 675M, XXL 1.03B. `tiny` is for tests: seconds on a CPU.

_BACKBONES: dict[str, dict[str, Any]] = {
    "tiny": dict(depth=2, width=64, num_heads=2, repa_projector_dim=64),
    "demo": dict(depth=6, width=256, num_heads=4, patch_size=2, repa_projector_dim=256),
    "S": dict(depth=12, width=384, num_heads=6),
    "B": dict(depth=12, width=768, num_heads=12),
    "L": dict(depth=24, width=1024, num_heads=16),
    "XL": dict(depth=28, width=1152, num_heads=16),
    "XXL": dict(depth=24, width=1536, num_heads=24),
}

PRESETS: tuple[str, ...] = tuple(_BACKBONES)


# Per preset: its sections' fields that differ from the defaults (model fields beyond the
# backbone's size, the latent, training and sampling settings).
_SECTIONS: dict[str, dict[str, dict[str, Any]]] = {
    "tiny": {
        "model": dict(num_classes=10, repa_depth=1, repa_dim=32),
        "latent": dict(tex_channels=4, sem_channels=2, size=8),
        "train": dict(global_batch_size=16, total_steps=200, log_every=10, ckpt_every=100),
    },
    # the embedded default (sfd demo): Fashion-MNIST 32 px, 4 texture + 4 semantic channels on
    # 8x8. A short run: an EMA half-life of ~70 steps (0.999 would still be ~45 % init at 800).
    # CFG 4: probe accuracy of samples 0.50 at scale 2, 0.58 at 3, 0.61 at 4 (200 samples).
    "demo": {
        "model": dict(num_classes=10, repa_dim=40),
        "latent": dict(tex_channels=4, sem_channels=4, size=8),
        "train": dict(
            global_batch_size=64,
            total_steps=600,
            lr=1e-3,
            beta2=0.99,
            ema_decay=0.99,
            log_every=25,
            ckpt_every=200,
        ),
        "sample": dict(
            method="heun", num_steps=10, cfg_scale_tex=4.0, cfg_scale_sem=4.0, compute_batch=50
        ),
    },
}


def preset(name: str) -> Config:
    """The named preset: backbone size on the ImageNet-256 latent (32 + 16 channels, 16x16).

    ``tiny`` is a small latent (4 + 2 channels on 8x8, 10 classes) so tests run in seconds;
    ``demo`` is the embedded default's model (``sfd demo``, Fashion-MNIST on a CPU).
    """
    if name not in _BACKBONES:
        raise ValueError(f"unknown preset {name!r}; expected one of {', '.join(PRESETS)}")
    sections = _SECTIONS.get(name, {})
    return Config(
        model=ModelConfig(**{**_BACKBONES[name], **sections.get("model", {})}),
        latent=LatentConfig(**sections.get("latent", {})),
        train=TrainConfig(**sections.get("train", {})),
        sample=SampleConfig(**sections.get("sample", {})),
        preset=name,
    )
