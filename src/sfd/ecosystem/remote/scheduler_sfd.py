"""``SFDScheduler``: the staged semantic-first schedule and its solvers in diffusers' format.

diffusers' schedulers are stateful ``step()`` objects; sfd's schedule is data (a
:class:`StagedSchedule` of (t_sem, t_tex) rows, docs/METHOD.md §4) and its solvers are short
functions in one registry (``solvers.SOLVERS``: Euler, Heun, dopri5). This class keeps that
split: a ``SchedulerMixin`` + ``ConfigMixin`` that saves and loads ``scheduler_config.json`` like
any diffusers scheduler and stores the run's sampler (the ``sample`` section of an sfd config,
its step count under diffusers' name ``num_inference_steps``, and the run's Δt). The pipeline
asks it for a call's settings (:meth:`SFDScheduler.sampler`) and what the solver integrates
(:meth:`SFDScheduler.use`), and samples with sfd's one generation function
(``sample.sample_latents``).

The schedule travels as data too: ``schedules`` holds the run's fixed-step schedules by step
count (every row of ``tau``, ``t_tex``, ``t_sem``, ``dt_tex``, ``dt_sem``; float32 values, exact
in JSON), and :meth:`set_timesteps` uses a stored schedule where there is one. Other step counts
are built from Δt for the staged path (``path="staged"``); a run on another path stores each
step count it offers. An adaptive solver (dopri5) integrates the staged path's continuous drift.

This file is written verbatim into an export's ``scheduler/`` folder beside the files it imports
(``sfd.ecosystem.remote``): it imports nothing of sfd by name. Nothing in here holds solver state.
"""

from __future__ import annotations

import dataclasses

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin

# diffusers copies only the files this module imports itself: it names every sibling it needs
from .guidance import Guidance  # noqa: F401  latent_sampling's sibling
from .latent_sampling import SampleSettings, integrate
from .numerics import FixedBatch  # noqa: F401  latent_sampling's sibling
from .path import Layout, check_delta_t
from .progress import ProgressPath, offset_path
from .schedule import StagedSchedule, staged_schedule
from .solvers import Solution, VelocityFn, solver

SCHEDULE_ROWS = ("tau", "t_tex", "t_sem", "dt_tex", "dt_sem")
# a SampleSettings field -> its name in the scheduler's config, where diffusers names it otherwise
CONFIG_NAMES = {"num_steps": "num_inference_steps"}


def scheduler_settings(sample) -> dict:
    """The scheduler's config entries of a ``sample`` section (sfd's ``SampleConfig``)."""
    return {
        CONFIG_NAMES.get(f.name, f.name): getattr(sample, f.name)
        for f in dataclasses.fields(SampleSettings)
    }


def schedule_rows(schedule: StagedSchedule) -> dict[str, list[float]]:
    """A schedule as JSON-ready lists (float32 values, which JSON keeps exactly)."""
    return {k: getattr(schedule, k).tolist() for k in SCHEDULE_ROWS}


class SFDScheduler(SchedulerMixin, ConfigMixin):
    """The run's sampler: Δt, solver, step count, boundary rule, shift, guidance defaults and the
    stored fixed-step schedules."""

    config_name = "scheduler_config.json"
    order = 1

    @register_to_config
    def __init__(
        self,
        delta_t: float = 0.3,
        method: str = "dopri5",
        num_inference_steps: int = 24,
        boundary: str = "exact",
        timestep_shift: float = 0.0,
        atol: float = 1e-6,
        rtol: float = 1e-3,
        compute_batch: int = 16,
        cfg_scale_tex: float = 1.0,
        cfg_scale_sem: float = 1.0,
        cfg_interval_tex: tuple[float, float] = (0.0, 1.0),
        cfg_interval_sem: tuple[float, float] = (0.0, 1.0),
        guide: str = "cfg",
        path: str = "staged",
        schedules: dict | None = None,
    ) -> None:
        check_delta_t(delta_t)
        self.sampler()  # validates every field now
        for steps in schedules or {}:
            self.stored_schedule(int(steps))  # validates the stored rows now
        self.schedule: StagedSchedule | None = None
        self.timesteps = torch.zeros(0)

    def sampler(self, **changes) -> SampleSettings:
        """This scheduler's settings, with ``changes`` (:class:`SampleSettings` field names)."""
        c = self.config
        base = {
            f.name: c[CONFIG_NAMES.get(f.name, f.name)] for f in dataclasses.fields(SampleSettings)
        }
        return SampleSettings(**{**base, **changes})

    def stored_schedule(self, num_steps: int) -> StagedSchedule | None:
        """The stored schedule of ``num_steps`` steps, or None."""
        rows = (self.config.schedules or {}).get(str(num_steps))
        if rows is None:
            return None
        t = {k: torch.tensor(rows[k], dtype=torch.float32) for k in SCHEDULE_ROWS}
        if any(t[k].shape != (num_steps + 1,) for k in ("tau", "t_tex", "t_sem")) or any(
            t[k].shape != (num_steps,) for k in ("dt_tex", "dt_sem")
        ):
            raise ValueError(f"the stored {num_steps}-step schedule has rows of the wrong length")
        return StagedSchedule(float(self.config.delta_t), boundary=self.config.boundary, **t)

    def fixed_step_schedule(self, s: SampleSettings) -> StagedSchedule:
        """The stored schedule of ``s.num_steps`` steps (at the stored settings), else the staged
        schedule built from Δt."""
        c = self.config
        stored = self.stored_schedule(s.num_steps)
        if stored is not None and (s.boundary, s.timestep_shift) == (c.boundary, c.timestep_shift):
            return stored
        if c.path != "staged":
            have = sorted(int(k) for k in (c.schedules or {}))
            raise ValueError(
                f"this scheduler's {c.path!r} path is stored for {have} steps (at boundary "
                f"{c.boundary!r}, shift {c.timestep_shift}); got {s.num_steps} steps"
            )
        return staged_schedule(s.num_steps, c.delta_t, s.timestep_shift, s.boundary)

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: torch.device | str | None = None,
        method: str | None = None,
    ) -> None:
        """Build the schedule; ``timesteps`` is its global-time grid tau (K + 1,)."""
        s = self.sampler(
            **({"num_steps": num_inference_steps} if num_inference_steps else {}),
            **({"method": method} if method else {}),
        )
        self.use(s, device)

    def use(
        self, s: SampleSettings, device: torch.device | str | None = None
    ) -> tuple[ProgressPath | None, StagedSchedule | None]:
        """Make ``s`` this scheduler's current sampler (``schedule``, ``timesteps``) and return
        what its solver integrates: (the staged path, None) for an adaptive solver, (None, the
        fixed-step schedule) for a fixed-step one."""
        if solver(s.method).fixed_step:
            self.schedule = self.fixed_step_schedule(s)
            self.timesteps = self.schedule.tau.to(device)
            return None, self.schedule
        if self.config.path != "staged":
            raise ValueError(
                f"{s.method} integrates the staged path; this scheduler's is {self.config.path!r}"
            )
        path = offset_path(self.config.delta_t)
        self.schedule = None
        self.timesteps = torch.tensor([0.0, path.span], device=device)
        return path, None

    def solve(
        self,
        velocity_fn: VelocityFn,
        noise: torch.Tensor,
        layout: Layout,
        sample: SampleSettings,
        keep_trajectory: bool = False,
    ) -> Solution:
        """Integrate from ``noise`` with sfd's solver (the settings of ``sample``)."""
        path, schedule = self.use(sample, noise.device)
        return integrate(velocity_fn, noise, sample, layout, path, schedule, keep_trajectory)
