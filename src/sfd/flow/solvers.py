"""Solvers for the staged probability-flow ODE (docs/METHOD.md §4).

A velocity function has the signature ``velocity_fn(x, t_tex, t_sem) -> v`` with float32
scalar times. Fixed-step solvers walk a :class:`~sfd.flow.schedule.StagedSchedule` and move each
part by its own step (``dt_tex``, ``dt_sem``); the adaptive solver integrates the masked drift
``dx/dtau = [1(tau >= Δt) v_tex, 1(tau <= 1) v_sem]`` with torchdiffeq's dopri5 (Dormand-Prince
5(4), Chen et al. 2018), as the SFD release does. Along a learned progress path
(:mod:`sfd.flow.progress`) the drift is ``[du_tex/ds v_tex, du_sem/ds v_sem]`` and the solver is
told every kink of the path (:func:`dopri5_path`).

:data:`SOLVERS` is the one registry of solvers: name -> function, its NFE rule and whether it
integrates the continuous drift across the stage boundaries' jumps. Every list of solver names
in sfd is read from it (``sample.method``, a release YAML's ``sampling_method``, the diffusers
scheduler, the ablation's sampler names). The run config validates ``sample.method`` against
it, so this file, like the time convention, progress paths and schedule it imports, sits in the
foundation layer (docs/ARCHITECTURE.md); it imports only torch and its siblings, relatively,
because a diffusers export carries it verbatim (docs/ECOSYSTEM.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .path import Layout, check_delta_t, part_times
from .progress import ProgressPath, offset_path
from .schedule import StagedSchedule, drift_masks

VelocityFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Solution:
    """Final state, optionally the states at every grid point, and the number of model calls."""

    final: torch.Tensor
    trajectory: list[torch.Tensor] = field(default_factory=list)
    nfe: int = 0


def euler(
    velocity_fn: VelocityFn,
    x: torch.Tensor,
    schedule: StagedSchedule,
    layout: Layout,
    keep_trajectory: bool = False,
) -> Solution:
    """Fixed-step Euler: x_{k+1} = x_k + [dt_tex, dt_sem]_k * v(x_k, t_k). NFE = num_steps."""
    layout.check(x, "initial noise")
    traj = [x] if keep_trajectory else []
    for k in range(schedule.num_steps):
        v = velocity_fn(x, schedule.t_tex[k], schedule.t_sem[k])
        x = x + layout.per_channel(schedule.dt_tex[k], schedule.dt_sem[k], v) * v
        if keep_trajectory:
            traj.append(x)
    return Solution(x, traj, schedule.num_steps)


def heun(
    velocity_fn: VelocityFn,
    x: torch.Tensor,
    schedule: StagedSchedule,
    layout: Layout,
    keep_trajectory: bool = False,
) -> Solution:
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


def dopri5(
    velocity_fn: VelocityFn,
    x: torch.Tensor,
    delta_t: float,
    layout: Layout,
    atol: float = 1e-6,
    rtol: float = 1e-3,
    boundary: str = "exact",
) -> Solution:
    """Adaptive dopri5 on the masked drift over tau in [0, 1 + Δt] (release: atol 1e-6, rtol 1e-3).

    The drift jumps where a part starts or stops (tau = Δt, tau = 1). With ``boundary="exact"``
    the solver is told so (torchdiffeq's ``jump_t``): no accepted step straddles a stage
    boundary. ``"release"`` integrates straight across, as the SFD release does; its steps then
    straddle the jumps, which costs accuracy. Like the release, the solver may evaluate the
    drift past ``1 + Δt`` (it steps past the last output time and interpolates back).
    """
    layout.check(x, "initial noise")
    delta_t = check_delta_t(delta_t)
    end = torch.tensor(1.0 + delta_t, dtype=torch.float32)
    exact = boundary == "exact"

    def drift(tau: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        # Masks compare tau in the solver's dtype (torchdiffeq nudges tau across a jump by one
        # ulp of that dtype); the model gets float32 times.
        t_tex, t_sem = part_times(tau.to(torch.float32), delta_t)
        tex_on, sem_on = drift_masks(tau, delta_t)
        if exact and bool(tau.cpu() > end.to(tau.dtype)):
            # Look-ahead past the end (the solver interpolates back): parts keep moving as they
            # did at the end, so the last step does not straddle a jump (Δt = 0: semantics).
            tex_on, sem_on = drift_masks(end.to(tau.dtype), delta_t)
            t_sem = tau.to(torch.float32) if bool(sem_on) else t_sem
        v = velocity_fn(state, t_tex, t_sem)
        return v * layout.per_channel(tex_on.float(), sem_on.float(), v)

    if boundary not in ("exact", "release"):
        raise ValueError(f"boundary must be 'exact' or 'release'; got {boundary!r}")
    jumps = sorted({b for b in (delta_t, 1.0) if 0.0 < b < 1.0 + delta_t}) if exact else []
    return _integrate(drift, x, 1.0 + delta_t, jumps, atol, rtol)


def dopri5_path(
    velocity_fn: VelocityFn,
    x: torch.Tensor,
    path: ProgressPath,
    layout: Layout,
    atol: float = 1e-6,
    rtol: float = 1e-3,
) -> Solution:
    """Adaptive dopri5 along any progress path over s in [0, span]: each part moves at its
    progress rate, and the path's kinks are jumps the solver steps to (``jump_t``). Past the
    end (the solver's look-ahead) the parts keep the rate and the time they had at the end."""
    layout.check(x, "initial noise")
    end = torch.tensor(path.span, dtype=torch.float32)
    last = torch.nextafter(end, torch.zeros(()))  # inside the last segment

    def drift(s: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        s32 = s.to(torch.float32).cpu()
        r_tex, r_sem = path.rate_at(torch.minimum(s32, last))
        t_tex, t_sem = path.at(s32)
        if bool(s32 > end):
            u_tex, u_sem = path.at(end)
            t_tex, t_sem = u_tex + r_tex * (s32 - end), u_sem + r_sem * (s32 - end)
        v = velocity_fn(state, t_tex.to(x.device), t_sem.to(x.device))
        return v * layout.per_channel(r_tex.to(v), r_sem.to(v), v)

    return _integrate(drift, x, path.span, path.kinks(), atol, rtol)


def _integrate(
    drift: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    span: float,
    jumps: list[float],
    atol: float,
    rtol: float,
) -> Solution:
    """torchdiffeq's dopri5 of ``drift`` from 0 to ``span`` (float32 times), told of the drift's
    ``jumps`` (``jump_t``) if any; the drift's evaluations are counted as the solution's NFE."""
    from torchdiffeq import odeint  # only dopri5 needs torchdiffeq

    nfe = 0

    def counted(time: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        nonlocal nfe
        nfe += 1
        return drift(time, state)

    grid = torch.tensor([0.0, span], dtype=torch.float32, device=x.device)
    options = {}
    if jumps:
        options["jump_t"] = torch.tensor(jumps, dtype=x.dtype, device=x.device)
    out = odeint(counted, x, grid, method="dopri5", atol=atol, rtol=rtol, options=options)
    return Solution(out[-1], [], nfe)


def dopri5_along(
    velocity_fn: VelocityFn,
    x: torch.Tensor,
    path: ProgressPath,
    layout: Layout,
    atol: float = 1e-6,
    rtol: float = 1e-3,
    boundary: str = "exact",
) -> Solution:
    """dopri5 along ``path``: SFD's offset path by its Δt (:func:`dopri5`, either boundary
    rule), a learned one by its kinks (:func:`dopri5_path`, the exact rule only)."""
    if path.delta_t is not None:
        return dopri5(velocity_fn, x, path.delta_t, layout, atol, rtol, boundary)
    if boundary != "exact":
        raise ValueError("a learned schedule samples with boundary='exact'")
    return dopri5_path(velocity_fn, x, path, layout, atol, rtol)


@dataclass(frozen=True)
class Solver:
    """An entry of :data:`SOLVERS`.

    ``function`` is called one of two ways. A fixed-step solver walks a schedule:
    ``function(velocity_fn, x, schedule, layout, keep_trajectory)``; it makes
    ``evaluations_per_step`` velocity evaluations a step, and the schedule's rows carry the
    boundary rule. An adaptive solver (``evaluations_per_step`` None: it counts its own, in
    :attr:`Solution.nfe`) integrates the continuous drift along a progress path:
    ``function(velocity_fn, x, path, layout, atol, rtol, boundary)``. ``boundary_jumps``: the
    drift it integrates jumps where a part starts or stops, and under the exact boundary rule
    the solver is told where (torchdiffeq's ``jump_t``).
    """

    function: Callable[..., Solution]
    evaluations_per_step: int | None
    boundary_jumps: bool

    @property
    def fixed_step(self) -> bool:
        return self.evaluations_per_step is not None

    def nfe(self, num_steps: int) -> int | None:
        """Velocity evaluations of a ``num_steps``-step solve; None for an adaptive solver."""
        return None if self.evaluations_per_step is None else self.evaluations_per_step * num_steps


SOLVERS: dict[str, Solver] = {
    "euler": Solver(euler, evaluations_per_step=1, boundary_jumps=False),
    "heun": Solver(heun, evaluations_per_step=2, boundary_jumps=False),
    "dopri5": Solver(dopri5_along, evaluations_per_step=None, boundary_jumps=True),
}


def solver(name: str) -> Solver:
    """The registry's entry ``name``; one error listing the known names otherwise."""
    if name not in SOLVERS:
        raise ValueError(f"unknown solver {name!r}; known solvers: {', '.join(SOLVERS)}")
    return SOLVERS[name]


def solve(
    velocity_fn: VelocityFn,
    x: torch.Tensor,
    *,
    method: str,
    layout: Layout,
    schedule: StagedSchedule | None = None,
    delta_t: float | None = None,
    atol: float = 1e-6,
    rtol: float = 1e-3,
    keep_trajectory: bool = False,
    boundary: str = "exact",
    path: ProgressPath | None = None,
) -> Solution:
    """Run the registry's solver ``method``: a fixed-step one on ``schedule``; an adaptive one
    along ``path`` (default: the schedule's path, else SFD's offset path of ``delta_t``, which
    wins over the path's own Δt; ``boundary`` picks its stage-boundary handling)."""
    spec = solver(method)
    if spec.fixed_step:
        if schedule is None:
            raise ValueError(f"method {method!r} needs a schedule")
        return spec.function(velocity_fn, x, schedule, layout, keep_trajectory)
    if path is None and schedule is not None:
        path = schedule.path
    if path is None or path.delta_t is not None:
        if delta_t is None:
            delta_t = schedule.delta_t if schedule is not None else None
        if delta_t is None and path is not None:
            delta_t = path.delta_t
        if delta_t is None:
            raise ValueError(f"method {method!r} needs delta_t or a progress path")
        path = offset_path(delta_t)
    return spec.function(velocity_fn, x, path, layout, atol, rtol, boundary)
