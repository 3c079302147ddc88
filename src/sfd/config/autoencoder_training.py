"""Training configs of the latent space's two autoencoders (:mod:`sfd.training.semvae_fit`,
:mod:`sfd.training.texture_vae`); their model configs live beside their models."""

from __future__ import annotations

from dataclasses import dataclass

# the SemVAE loss's cosine: per token across channels (sfd's), or the release's token axis
COS_AXES = ("channel", "token")


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
    cos_axis: str = "channel"  # per-token cosine; "token": the release's (docs/METHOD.md §2.2)
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
