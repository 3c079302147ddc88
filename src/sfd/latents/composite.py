"""The composite latent c = [z, s] and its normalisation (docs/METHOD.md §1, §2.4).

Texture channels ``z`` (C_z) come first and semantic channels ``s`` (C_s) last, on one H x W
grid, as in the SFD release. Per-channel mean and std are estimated separately for z and s over
the training latents; the diffusion model sees normalised latents and decoding de-normalises
with the same statistics, which travel with the checkpoint. No code outside this module slices
channels with a literal.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LatentLayout:
    """Channel layout of the composite latent: texture [0, C_z), semantic [C_z, C_z + C_s)."""

    tex_channels: int
    sem_channels: int

    @property
    def channels(self) -> int:
        return self.tex_channels + self.sem_channels

    def tex(self, c: torch.Tensor) -> torch.Tensor:
        """The texture part of a composite tensor (B, C, ...) -> (B, C_z, ...)."""
        return c[:, : self.tex_channels]

    def sem(self, c: torch.Tensor) -> torch.Tensor:
        """The semantic part of a composite tensor (B, C, ...) -> (B, C_s, ...)."""
        return c[:, self.tex_channels :]

    def split(self, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.check(c, "composite latent")
        return self.tex(c), self.sem(c)

    def join(self, z: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        if z.shape[1] != self.tex_channels or s.shape[1] != self.sem_channels:
            raise ValueError(
                f"expected {self.tex_channels} texture and {self.sem_channels} "
                f"semantic channels; got {z.shape[1]} and {s.shape[1]}"
            )
        return torch.cat([z, s], dim=1)

    def per_channel(
        self, tex_value: torch.Tensor | float, sem_value: torch.Tensor | float, like: torch.Tensor
    ) -> torch.Tensor:
        """A (1, C, 1, 1) tensor holding ``tex_value`` on texture and ``sem_value`` on semantic
        channels (scalars or per-part vectors), for per-part weights and masks."""
        tex = torch.as_tensor(tex_value, dtype=like.dtype, device=like.device).expand(
            self.tex_channels
        )
        sem = torch.as_tensor(sem_value, dtype=like.dtype, device=like.device).expand(
            self.sem_channels
        )
        return torch.cat([tex, sem]).view(1, -1, *([1] * (like.ndim - 2)))

    def check(self, c: torch.Tensor, name: str) -> None:
        if c.ndim < 2 or c.shape[1] != self.channels:
            raise ValueError(
                f"{name} must have {self.channels} channels (C_z={self.tex_channels} "
                f"+ C_s={self.sem_channels}) on axis 1; got shape {tuple(c.shape)}"
            )


@dataclass(frozen=True)
class LatentStats:
    """Per-channel mean and std of the composite latent (texture then semantic channels)."""

    mean: torch.Tensor  # (C,)
    std: torch.Tensor  # (C,)

    def __post_init__(self) -> None:
        if self.mean.shape != self.std.shape or self.mean.ndim != 1:
            raise ValueError(
                f"latent stats mean/std must be equal-length vectors; got "
                f"{tuple(self.mean.shape)} and {tuple(self.std.shape)}"
            )
        if not bool((self.std > 0).all()):
            raise ValueError("latent stats std must be > 0 in every channel")

    @classmethod
    def identity(cls, channels: int) -> LatentStats:
        return cls(torch.zeros(channels), torch.ones(channels))

    def _view(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.shape[1] != self.mean.numel():
            raise ValueError(
                f"latent has {x.shape[1]} channels but the statistics have {self.mean.numel()}"
            )
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return (
            self.mean.to(x.device, x.dtype).view(shape),
            self.std.to(x.device, x.dtype).view(shape),
        )

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = self._view(x)
        return (x - mean) / std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = self._view(x)
        return x * std + mean

    def to_dict(self) -> dict[str, list[float]]:
        return {"mean": self.mean.double().tolist(), "std": self.std.double().tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, list[float]]) -> LatentStats:
        return cls(
            torch.tensor(data["mean"], dtype=torch.float32),
            torch.tensor(data["std"], dtype=torch.float32),
        )
