"""THE time convention of sfd, written once (docs/METHOD.md §1, §3).

``t = 0`` is pure noise and ``t = 1`` is clean data: ``x_t = t x1 + (1 - t) x0`` with
``x0 ~ N(0, I)`` and the velocity target ``u = x1 - x0``. SFD gives the texture and semantic
parts their own times, both derived from one global time ``tau`` in ``[0, 1 + Δt]``::

    t_sem = min(tau, 1),   t_tex = max(tau - Δt, 0)

so semantics are always at least as clean as texture and lead it by Δt. Training stretches a
base time ``u`` in [0, 1] to ``tau = u (1 + Δt)``. Δt = 0 is synchronous, Δt = 1 is serial.
All arithmetic is float32, in the same order as the SFD release, so its tensors are reproduced
bit for bit (the ``linspace`` grid and the clamped subtraction decide stage boundaries).
"""

from __future__ import annotations

from typing import Protocol

import torch


class Layout(Protocol):
    """The composite-latent layout the flow works on: ``sfd.latents.composite.LatentLayout``.

    The flow files import nothing of sfd outside ``sfd.flow`` (a diffusers export carries them
    verbatim beside ``composite.py``; docs/ECOSYSTEM.md), so they name the layout by what they use.
    """

    tex_channels: int
    sem_channels: int

    def tex(self, c: torch.Tensor) -> torch.Tensor: ...
    def sem(self, c: torch.Tensor) -> torch.Tensor: ...
    def join(self, z: torch.Tensor, s: torch.Tensor) -> torch.Tensor: ...
    def per_channel(self, tex_value, sem_value, like: torch.Tensor) -> torch.Tensor: ...
    def check(self, c: torch.Tensor, name: str) -> None: ...


def check_delta_t(delta_t: float) -> float:
    if not 0.0 <= float(delta_t) <= 1.0:
        raise ValueError(f"delta_t must be in [0, 1]; got {delta_t!r}")
    return float(delta_t)


def part_times(tau: torch.Tensor, delta_t: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(t_tex, t_sem) at global time(s) ``tau`` (float32)."""
    tau = torch.as_tensor(tau, dtype=torch.float32)
    t_sem = torch.clamp(tau, max=1.0)
    t_tex = torch.clamp(tau - delta_t, min=0.0)
    return t_tex, t_sem


def stretch(base: torch.Tensor, delta_t: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Training times from base times u in [0, 1]: tau = u (1 + Δt), then :func:`part_times`."""
    delta_t = check_delta_t(delta_t)
    return part_times(base.float() * (1 + delta_t), delta_t)


def logit_normal(normal: torch.Tensor) -> torch.Tensor:
    """u = sigmoid(n) for standard-normal draws n, in float64 then cast to float32 (release)."""
    return torch.sigmoid(normal.double()).float()


def sample_base_time(batch: int, dist: str, generator: torch.Generator) -> torch.Tensor:
    """Base times u in [0, 1] (float32): ``logit_normal`` (release) or ``uniform``."""
    if dist == "logit_normal":
        return logit_normal(torch.randn(batch, generator=generator, dtype=torch.float64))
    if dist == "uniform":
        return torch.rand(batch, generator=generator, dtype=torch.float32)
    raise ValueError(f"time distribution must be 'logit_normal' or 'uniform'; got {dist!r}")


def _bcast(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
    return t.reshape(-1, *([1] * (like.ndim - 1))) if t.ndim else t


def interpolate(
    x0: torch.Tensor,
    x1: torch.Tensor,
    t_tex: torch.Tensor,
    t_sem: torch.Tensor,
    layout: Layout,
) -> torch.Tensor:
    """x_t per part: texture at ``t_tex``, semantics at ``t_sem`` (one noise for all channels)."""
    layout.check(x1, "x1")
    if x0.shape != x1.shape:
        raise ValueError(f"noise x0 {tuple(x0.shape)} and data x1 {tuple(x1.shape)} differ")

    def path(t: torch.Tensor, a0: torch.Tensor, a1: torch.Tensor) -> torch.Tensor:
        t = _bcast(t, a1)
        return t * a1 + (1 - t) * a0

    return layout.join(
        path(t_tex, layout.tex(x0), layout.tex(x1)), path(t_sem, layout.sem(x0), layout.sem(x1))
    )


def velocity_target(x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """u = x1 - x0 on all channels (the release does not mask clamped parts)."""
    return x1 - x0
