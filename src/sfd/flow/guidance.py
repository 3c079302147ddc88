"""Guided velocity functions for the sampler (docs/METHOD.md §5).

- Classifier-free guidance (Ho & Salimans 2022): ``v = v_u + w (v_c - v_u)`` on ALL channels
  (DiT/LightningDiT guide only the first 3 channels: a known bug), with separate texture and
  semantic scales and an optional time interval per part. Where no part is guided the
  unconditional branch is not computed at all.
- AutoGuidance (Karras et al. 2024): a weaker model of the same kind as the guide,
  ``v = v_g + w (v_main - v_g)``, both conditional, same per-part scales and intervals.

A part is guided at time t iff its scale != 1 and ``lo <= t <= hi`` for its interval (``hi = 1``
means no upper limit, as in the release, whose adaptive solver may probe ``t_tex > 1``). The SFD
release decides the interval from batch element 0 for the whole batch; ``sfd`` decides per item
(the same whenever all items share a time, as in sampling).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .path import Layout

ModelFn = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class Guidance:
    """Per-part guidance scales and intervals."""

    scale_tex: float = 1.0
    scale_sem: float = 1.0
    interval_tex: tuple[float, float] = (0.0, 1.0)
    interval_sem: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        for name in ("interval_tex", "interval_sem"):
            lo, hi = getattr(self, name)
            if not 0.0 <= lo <= hi <= 1.0:
                raise ValueError(f"guidance {name} must satisfy 0 <= lo <= hi <= 1; got {(lo, hi)}")

    @property
    def active(self) -> bool:
        return self.scale_tex != 1.0 or self.scale_sem != 1.0

    def weights(
        self,
        t_tex: torch.Tensor,
        t_sem: torch.Tensor,
        batch: int,
        layout: Layout,
        like: torch.Tensor,
    ) -> torch.Tensor | None:
        """Per-item, per-channel guidance scale (B, C, 1, 1), or None where nothing is guided
        (a part without channels, e.g. C_s = 0 for texture-only models, is never guided)."""
        w_tex = self._part(self.scale_tex, self.interval_tex, t_tex, batch)
        w_sem = self._part(self.scale_sem, self.interval_sem, t_sem, batch)
        tex = w_tex.to(like)[:, None].expand(batch, layout.tex_channels)
        sem = w_sem.to(like)[:, None].expand(batch, layout.sem_channels)
        w = torch.cat([tex, sem], dim=1)
        return None if bool((w == 1).all()) else w[..., None, None]

    @staticmethod
    def _part(
        scale: float, interval: tuple[float, float], t: torch.Tensor, batch: int
    ) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=torch.float32).reshape(-1).expand(batch)
        inside = t >= interval[0]
        if interval[1] < 1.0:  # hi = 1 means no upper limit (dopri5 may probe t_tex > 1)
            inside &= t <= interval[1]
        return torch.where(inside, torch.tensor(float(scale)), torch.tensor(1.0))


def _combine(base: torch.Tensor, strong: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """base + w (strong - base); exactly ``strong`` where w == 1."""
    return torch.where(w == 1, strong, base + w * (strong - base))


def cfg_velocity(
    model: nn.Module, y: torch.Tensor, guidance: Guidance, layout: Layout
) -> Callable[..., torch.Tensor]:
    """velocity_fn(x, t_tex, t_sem) with classifier-free guidance against the null class."""
    null = torch.full_like(y, model.null_class)

    def velocity(x: torch.Tensor, t_tex: torch.Tensor, t_sem: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        w = guidance.weights(t_tex, t_sem, b, layout, x)
        if w is None:
            return model(x, t_tex=t_tex, t_sem=t_sem, y=y)
        tt = torch.as_tensor(t_tex, device=x.device).reshape(-1).expand(b)
        ts = torch.as_tensor(t_sem, device=x.device).reshape(-1).expand(b)
        out = model(
            torch.cat([x, x]),
            t_tex=torch.cat([tt, tt]),
            t_sem=torch.cat([ts, ts]),
            y=torch.cat([y, null]),
        )
        cond, uncond = out.chunk(2)
        return _combine(uncond, cond, w)

    return velocity


def autoguidance_velocity(
    model: nn.Module, guide: nn.Module, y: torch.Tensor, guidance: Guidance, layout: Layout
) -> Callable[..., torch.Tensor]:
    """velocity_fn(x, t_tex, t_sem) with AutoGuidance by a weaker conditional ``guide`` model."""

    def velocity(x: torch.Tensor, t_tex: torch.Tensor, t_sem: torch.Tensor) -> torch.Tensor:
        main = model(x, t_tex=t_tex, t_sem=t_sem, y=y)
        w = guidance.weights(t_tex, t_sem, x.shape[0], layout, x)
        if w is None:
            return main
        return _combine(guide(x, t_tex=t_tex, t_sem=t_sem, y=y), main, w)

    return velocity


def plain_velocity(model: nn.Module, y: torch.Tensor) -> Callable[..., torch.Tensor]:
    """velocity_fn(x, t_tex, t_sem) of the conditional model, no guidance."""

    def velocity(x: torch.Tensor, t_tex: torch.Tensor, t_sem: torch.Tensor) -> torch.Tensor:
        return model(x, t_tex=t_tex, t_sem=t_sem, y=y)

    return velocity


def guided_velocity(
    model: nn.Module,
    y: torch.Tensor,
    guidance: Guidance,
    layout: Layout,
    mode: str = "cfg",
    guide: nn.Module | None = None,
) -> Callable[..., torch.Tensor]:
    """The velocity function the solver calls: ``mode`` ``"cfg"`` (plain where no part is
    guided) or ``"autoguidance"`` (needs ``guide`` and a scale != 1)."""
    if mode == "autoguidance":
        if guide is None:
            raise ValueError("sample.guide='autoguidance' needs a guide model (--guide RUN)")
        if not guidance.active:
            raise ValueError("AutoGuidance needs a scale != 1 (sample.cfg_scale_tex/_sem)")
        return autoguidance_velocity(model, guide, y, guidance, layout)
    if mode != "cfg":
        raise ValueError(f"guidance must be 'cfg' or 'autoguidance'; got {mode!r}")
    if guidance.active:
        return cfg_velocity(model, y, guidance, layout)
    return plain_velocity(model, y)
