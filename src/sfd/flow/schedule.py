"""The three-stage semantic-first schedule as data (docs/METHOD.md §4), and the grid of any
progress path (:mod:`sfd.flow.progress`, docs/SCHEDULE.md).

One global time ``tau`` runs over a grid from 0 to ``1 + Δt``; at each grid point the parts
have times ``t_sem = min(tau, 1)`` and ``t_tex = max(tau - Δt, 0)``:

- stage I   (tau < Δt):        only the semantic latent moves;
- stage II  (Δt <= tau <= 1):  both move, semantics ahead by Δt;
- stage III (tau > 1):         only the texture moves.

A :class:`StagedSchedule` holds the grid and, for every step, how far each part moves
(``dt_tex``, ``dt_sem``). Two boundary rules are offered:

- ``"exact"`` (default): a part moves by the change of its own time, ``t(tau_{k+1}) - t(tau_k)``,
  so each part integrates exactly [0, 1] whatever the step count (a straight-line velocity lands
  on the data);
- ``"release"``: the SFD release's rule: the drift is masked at the LEFT end of each step
  (texture moves iff ``tau_k >= Δt``, semantics iff ``tau_k <= 1``, both inclusive, float32) and
  moves by the whole step ``tau_{k+1} - tau_k``. Steps that straddle a boundary then move a
  part too far or not at all; kept for bit-exact parity with released samples.

The grid is ``torch.linspace(0, 1 + Δt, num_steps + 1)`` in float32, exactly as the release
builds it (its rounding decides which stage a step is in). ``num_steps`` counts solver steps
(intervals); the release's ``num_sampling_steps`` counts grid points (= num_steps + 1).

Any monotone path (:func:`path_schedule`) is sampled the same way: the grid runs over its global
time [0, span] (SFD's offset path: span 1 + Δt, the grid above), the parts' times are read off
its curves, and the exact rule moves each part by the change of its own progress, so each part
integrates exactly its own [0, 1]. The release rule exists only for SFD's offset.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .path import check_delta_t
from .progress import ProgressPath, offset_path

BOUNDARY_RULES = ("exact", "release")


def shift_times(u: torch.Tensor, shift: float) -> torch.Tensor:
    """Timestep shift on the normalised grid: u' = s u / (1 + (s - 1) u); s <= 0 means off."""
    if shift <= 0:
        return u
    return shift * u / (1 + (shift - 1) * u)


def tau_grid(num_steps: int, delta_t: float, shift: float = 0.0) -> torch.Tensor:
    """The global-time grid (num_steps + 1,) in float32, from 0 to 1 + Δt."""
    return span_grid(num_steps, 1.0 + check_delta_t(delta_t), shift)


def span_grid(num_steps: int, end: float, shift: float = 0.0) -> torch.Tensor:
    """The global-time grid (num_steps + 1,) in float32, from 0 to ``end``."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1; got {num_steps}")
    grid = torch.linspace(0.0, end, num_steps + 1, dtype=torch.float32)
    if shift > 0:
        grid = shift_times(grid / end, shift) * end
    return grid


@dataclass(frozen=True)
class StagedSchedule:
    """Grid of global times and per-step movement of each part (all float32). ``delta_t`` is
    SFD's lead (NaN for a learned path); ``path`` the progress path the grid samples."""

    delta_t: float
    tau: torch.Tensor  # (K + 1,)
    t_tex: torch.Tensor  # (K + 1,)
    t_sem: torch.Tensor  # (K + 1,)
    dt_tex: torch.Tensor  # (K,) how far the texture moves in step k
    dt_sem: torch.Tensor  # (K,) how far the semantics move in step k
    boundary: str = "exact"
    path: ProgressPath | None = None

    @property
    def num_steps(self) -> int:
        return int(self.dt_tex.numel())

    def stage(self, k: int) -> str:
        """Stage of step k: 'I' (semantics only), 'II' (both), 'III' (texture only)."""
        tex, sem = bool(self.dt_tex[k] != 0), bool(self.dt_sem[k] != 0)
        return {(False, True): "I", (True, True): "II", (True, False): "III"}.get((tex, sem), "-")

    def rows(self) -> list[dict[str, float | str]]:
        """One row per step: global time, the part times the model sees, movements, stage."""
        return [
            {
                "step": k,
                "tau": float(self.tau[k]),
                "t_sem": float(self.t_sem[k]),
                "t_tex": float(self.t_tex[k]),
                "dt_sem": float(self.dt_sem[k]),
                "dt_tex": float(self.dt_tex[k]),
                "stage": self.stage(k),
            }
            for k in range(self.num_steps)
        ]


def staged_schedule(
    num_steps: int, delta_t: float, shift: float = 0.0, boundary: str = "exact"
) -> StagedSchedule:
    """Build the staged schedule for ``num_steps`` solver steps."""
    return path_schedule(num_steps, offset_path(delta_t), shift, boundary)


def path_schedule(
    num_steps: int, path: ProgressPath, shift: float = 0.0, boundary: str = "exact"
) -> StagedSchedule:
    """The schedule of ``num_steps`` solver steps along any progress path (module docstring)."""
    if boundary not in BOUNDARY_RULES:
        raise ValueError(f"boundary must be one of {BOUNDARY_RULES}; got {boundary!r}")
    if boundary == "release" and path.delta_t is None:
        raise ValueError(
            "sample.boundary='release' is the SFD release's rule for its fixed offset; a "
            "learned schedule samples with boundary='exact'"
        )
    tau = span_grid(num_steps, path.span, shift)
    t_tex, t_sem = path.at(tau)
    delta_t = math.nan if path.delta_t is None else path.delta_t
    if boundary == "exact":
        dt_tex, dt_sem = t_tex.diff(), t_sem.diff()
    else:
        h = tau.diff()
        left = tau[:-1]
        dt_tex = h * (left >= torch.tensor(delta_t, dtype=torch.float32)).float()
        dt_sem = h * (left <= torch.tensor(1.0, dtype=torch.float32)).float()
    return StagedSchedule(float(delta_t), tau, t_tex, t_sem, dt_tex, dt_sem, boundary, path)


def drift_masks(tau: torch.Tensor, delta_t: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(texture moves, semantics move) at continuous global time ``tau`` (inclusive), compared in
    tau's own floating dtype (float32 in sampling, as in the release)."""
    tau = torch.as_tensor(tau)
    tex = tau >= torch.tensor(delta_t, dtype=tau.dtype)
    sem = tau <= torch.tensor(1.0, dtype=tau.dtype)
    return tex, sem
