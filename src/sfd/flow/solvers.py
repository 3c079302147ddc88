"""Solvers for the staged probability-flow ODE (METHOD.md §4).

A velocity function has the signature ``velocity_fn(x, t_tex, t_sem) -> v`` with float32
scalar times. Fixed-step solvers walk a :class:`~sfd.flow.schedule.StagedSchedule` and move each
part by its own step (``dt_tex``, ``dt_sem``); the adaptive solver integrates the masked drift
``dx/dtau = [1(tau >= Δt) v_tex, 1(tau <= 1) v_sem]`` with torchdiffeq's dopri5 (Dormand-Prince
5(4), Chen et al. 2018), as the SFD release does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torchdiffeq import odeint

from sfd.flow.path import check_delta_t, part_times
from sfd.flow.schedule import StagedSchedule, drift_masks
from sfd.latents.composite import LatentLayout

VelocityFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Solution:
    """Final state, optionally the states at every grid point, and the number of model calls."""

    final: torch.Tensor
    trajectory: list[torch.Tensor] = field(default_factory=list)
    nfe: int = 0


def euler(velocity_fn: VelocityFn, x: torch.Tensor, schedule: StagedSchedule,
          layout: LatentLayout, keep_trajectory: bool = False) -> Solution:
    """Fixed-step Euler: x_{k+1} = x_k + [dt_tex, dt_sem]_k * v(x_k, t_k). NFE = num_steps."""
    layout.check(x, "initial noise")
    traj = [x] if keep_trajectory else []
    for k in range(schedule.num_steps):
        v = velocity_fn(x, schedule.t_tex[k], schedule.t_sem[k])
        x = x + layout.per_channel(schedule.dt_tex[k], schedule.dt_sem[k], v) * v
        if keep_trajectory:
            traj.append(x)
    return Solution(x, traj, schedule.num_steps)


def heun(velocity_fn: VelocityFn, x: torch.Tensor, schedule: StagedSchedule,
         layout: LatentLayout, keep_trajectory: bool = False) -> Solution:
    """Heun's second-order method (explicit trapezoid) per part. NFE = 2 num_steps."""
    layout.check(x, "initial noise")
    traj = [x] if keep_trajectory else []
    for k in range(schedule.num_steps):
        step = layout.per_channel(schedule.dt_tex[k], schedule.dt_sem[k], x)
        v1 = velocity_fn(x, schedule.t_tex[k], schedule.t_sem[k])
        x_pred = x + step * v1
        v2 = velocity_fn(x_pred, schedule.t_tex[k + 1], schedule.t_sem[k + 1])
        x = x + step * (0.5 * (v1 + v2))
        if keep_trajectory:
            traj.append(x)
    return Solution(x, traj, 2 * schedule.num_steps)


def dopri5(velocity_fn: VelocityFn, x: torch.Tensor, delta_t: float, layout: LatentLayout,
           atol: float = 1e-6, rtol: float = 1e-3) -> Solution:
    """Adaptive dopri5 on the masked drift over tau in [0, 1 + Δt] (release: atol 1e-6, rtol 1e-3).

    Like the release, the solver may evaluate the drift past ``1 + Δt`` (torchdiffeq steps past
    the last output time and interpolates back); there ``t_tex`` exceeds 1.
    """
    layout.check(x, "initial noise")
    delta_t = check_delta_t(delta_t)
    nfe = 0

    def drift(tau: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        nonlocal nfe
        nfe += 1
        tau = tau.to(torch.float32)
        t_tex, t_sem = part_times(tau, delta_t)
        v = velocity_fn(state, t_tex, t_sem)
        tex_on, sem_on = drift_masks(tau, delta_t)
        return v * layout.per_channel(tex_on.float(), sem_on.float(), v)

    grid = torch.linspace(0.0, 1.0 + delta_t, 2, dtype=torch.float32, device=x.device)
    out = odeint(drift, x, grid, method="dopri5", atol=atol, rtol=rtol)
    return Solution(out[-1], [], nfe)


def solve(velocity_fn: VelocityFn, x: torch.Tensor, *, method: str, layout: LatentLayout,
          schedule: StagedSchedule | None = None, delta_t: float | None = None,
          atol: float = 1e-6, rtol: float = 1e-3, keep_trajectory: bool = False) -> Solution:
    """Dispatch to ``euler``, ``heun`` (need ``schedule``) or ``dopri5`` (needs ``delta_t``)."""
    if method in ("euler", "heun"):
        if schedule is None:
            raise ValueError(f"method {method!r} needs a schedule")
        fn = euler if method == "euler" else heun
        return fn(velocity_fn, x, schedule, layout, keep_trajectory)
    if method == "dopri5":
        if delta_t is None:
            delta_t = schedule.delta_t if schedule is not None else None
        if delta_t is None:
            raise ValueError("method 'dopri5' needs delta_t")
        return dopri5(velocity_fn, x, delta_t, layout, atol, rtol)
    raise ValueError(f"unknown solver {method!r}; expected 'euler', 'heun' or 'dopri5'")
