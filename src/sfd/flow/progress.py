"""Asynchronous schedules as monotone paths: one progress curve per representation
(docs/SCHEDULE.md).

One generation time ``t`` in [0, 1] (noise -> data) drives both parts; each part's progress
``u_k = tau_k(t)`` rises monotonically from 0 to 1, and the denoiser sees both. A
:class:`ProgressPath` writes each curve as a sum of clamped ramps in a global time
``s = t * span``::

    u_k(s) = sum_j slope_kj * min(max(s - start_kj, 0), width_kj)

Every ramp is non-decreasing, so every path is monotone whatever its numbers; the rises
``slope * width`` of a part sum to 1 and no ramp starts before 0 or ends after ``span``, so
``u_k(0) = 0`` and ``u_k(span) = 1``. Two members:

- **SFD's offset** (:func:`offset_path`): span ``1 + Δt``, one ramp per part, semantics
  ``(0, 1, 1)`` and texture ``(Δt, inf, 1)``. These are the float32 operations of
  :func:`sfd.flow.path.part_times` term for term (``s - 0``, a clamp, a product by 1, a sum of one
  term), so training times and sampler grids are today's bit for bit; Δt = 0 is synchronous
  denoising. The texture ramp is open above, as ``part_times`` is: past the end an adaptive
  solver's look-ahead sees the texture keep moving.
- **A learned table** (:func:`table_path`): span 1 and, per part, ``M`` equal segments whose
  rises are the steps of a table of progress values at ``t_j = j / M`` (piecewise linear).

Progress rates ``du_k/dt`` are piecewise constant; a path changes rate only at its ramps' ends
(:meth:`ProgressPath.kinks`), which the adaptive solver is told about.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .path import check_delta_t

TEX, SEM = 0, 1


@dataclass(frozen=True, eq=False)
class ProgressPath:
    """Both parts' progress curves; ``ramps`` is (2, R, 3) float32: [part][ramp] = (start,
    width, slope), part 0 the texture and 1 the semantics. ``delta_t`` names SFD's offset
    member (None for any other path)."""

    span: float
    ramps: torch.Tensor
    delta_t: float | None = None

    def at(self, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(u_tex, u_sem) at global time(s) ``s`` (float32)."""
        s = torch.as_tensor(s, dtype=torch.float32)
        ramps = self.ramps.to(s.device)
        return ramp_sum(ramps[TEX], s), ramp_sum(ramps[SEM], s)

    def progress(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(u_tex, u_sem) at generation time(s) ``t`` in [0, 1]: ``s = t * span`` in float32
        (training's ``tau = u (1 + Δt)``)."""
        return self.at(torch.as_tensor(t).float() * self.span)

    def rate_at(self, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(du_tex/ds, du_sem/ds) at global time(s) ``s``: the slopes of the ramps that hold
        ``s`` (a ramp holds [start, start + width), so the rate is continuous from the right)."""
        s = torch.as_tensor(s, dtype=torch.float32)
        ramps = self.ramps.to(s.device)
        return ramp_rate(ramps[TEX], s), ramp_rate(ramps[SEM], s)

    def rate(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(du_tex/dt, du_sem/dt) at generation time(s) ``t``."""
        r_tex, r_sem = self.rate_at(torch.as_tensor(t).float() * self.span)
        return r_tex * self.span, r_sem * self.span

    def kinks(self) -> list[float]:
        """Global times strictly inside (0, span) where a part's rate may change."""
        r = self.ramps.detach().double()
        ends = torch.cat([r[..., 0].flatten(), (r[..., 0] + r[..., 1]).flatten()])
        return sorted({float(e) for e in ends if 0.0 < float(e) < self.span})

    def table(self, knots: int = 64) -> torch.Tensor:
        """(2, knots + 1) progress values at evenly spaced generation times (float64), with the
        endpoints exactly 0 and 1 (float32 rounding can leave the last value an ulp short)."""
        t = torch.linspace(0.0, 1.0, knots + 1, dtype=torch.float64)
        u_tex, u_sem = self.progress(t)
        table = torch.stack([u_tex, u_sem]).detach().double().clamp(0, 1)
        table[:, 0], table[:, -1] = 0.0, 1.0
        return table


def ramp_sum(ramps: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """sum_j slope_j * min(max(s - start_j, 0), width_j) for ramps (R, 3) at times ``s``."""
    start, width, slope = ramps[:, 0], ramps[:, 1], ramps[:, 2]
    held = torch.minimum(torch.clamp(s[..., None] - start, min=0.0), width)
    return (slope * held).sum(-1)


def ramp_rate(ramps: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """sum_j slope_j * [start_j <= s < start_j + width_j] for ramps (R, 3)."""
    start, width, slope = ramps[:, 0], ramps[:, 1], ramps[:, 2]
    x = s[..., None]
    inside = (x >= start) & (x - start < width)
    return (slope * inside.to(slope.dtype)).sum(-1)


def offset_path(delta_t: float) -> ProgressPath:
    """SFD's schedule with lead Δt (Δt = 0: synchronous) as a path (module docstring)."""
    delta_t = check_delta_t(delta_t)
    ramps = torch.tensor(
        [[[delta_t, math.inf, 1.0]], [[0.0, 1.0, 1.0]]], dtype=torch.float32
    )  # texture: open above, as part_times
    return ProgressPath(1.0 + delta_t, ramps, delta_t)


def table_ramps(table: torch.Tensor) -> torch.Tensor:
    """Ramps (2, M, 3) of the piecewise-linear path through ``table`` (2, M + 1) of progress
    values at t_j = j / M (span 1); differentiable in ``table``."""
    m = table.shape[-1] - 1
    start = torch.arange(m, dtype=torch.float32, device=table.device) / m
    width = torch.full((m,), 1.0 / m, dtype=torch.float32, device=table.device)
    slope = table.diff(dim=-1).float() * m  # (2, M)
    return torch.stack([start.expand(2, m), width.expand(2, m), slope], dim=-1)


def check_table(table) -> torch.Tensor:
    """A (2, M + 1) progress table as float64, or ``ValueError`` naming what is wrong (one
    line): each row must start at 0, end at 1 and never decrease."""
    t = torch.as_tensor(table, dtype=torch.float64)
    if t.ndim != 2 or t.shape[0] != 2 or t.shape[1] < 2:
        raise ValueError(
            f"a progress table must have shape (2, M + 1) with M >= 1 (texture row, semantic "
            f"row); got {tuple(t.shape)}"
        )
    for name, row in zip(("texture", "semantic"), t, strict=True):  # as sfd.config checks it
        problem = None
        drops = torch.nonzero(row.diff() < 0).flatten().tolist()
        if not bool(torch.isfinite(row).all()):
            problem = f"the {name} row has a value that is not finite"
        elif row[0] != 0.0 or row[-1] != 1.0:
            problem = (
                f"the {name} row must run from 0 to 1; it runs from {float(row[0])} to "
                f"{float(row[-1])}"
            )
        elif drops:
            j = drops[0] + 1
            problem = (
                f"the {name} row decreases at knot {j} ({float(row[j - 1])} -> "
                f"{float(row[j])}): a progress curve must be monotone"
            )
        if problem is not None:
            raise ValueError(f"not a progress table: {problem}")
    return t


def table_path(table) -> ProgressPath:
    """The piecewise-linear path through a checked progress table (2, M + 1)."""
    return ProgressPath(1.0, table_ramps(check_table(table)))


def lead_at_middle(path: ProgressPath) -> float:
    """The lead ``u_sem - u_tex`` where the path crosses ``u_sem + u_tex = 1``: the
    Δt-equivalent of a path (SFD's offset path gives exactly its Δt there, at t = 1/2)."""
    lo, hi = 0.0, 1.0
    for _ in range(60):  # u_sem + u_tex is monotone in t
        mid = (lo + hi) / 2
        u_tex, u_sem = path.progress(torch.tensor(mid, dtype=torch.float64))
        lo, hi = (mid, hi) if float(u_tex + u_sem) < 1.0 else (lo, mid)
    u_tex, u_sem = path.progress(torch.tensor((lo + hi) / 2, dtype=torch.float64))
    return float(u_sem - u_tex)
