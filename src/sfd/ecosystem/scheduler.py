"""``SFDScheduler``: the staged semantic-first schedule and its solvers in diffusers' format.

diffusers' schedulers are stateful ``step()`` objects; sfd's schedule is data (a
:class:`~sfd.flow.schedule.StagedSchedule` of (t_sem, t_tex) rows, METHOD.md §4) and its solvers
are short functions (:func:`sfd.flow.solvers.solve`: Euler, Heun, dopri5). This class keeps
that split: it is a ``SchedulerMixin`` + ``ConfigMixin`` that saves and loads
``scheduler_config.json`` like any diffusers scheduler and stores the run's sampler (the
``sample`` section of an sfd config and the run's Δt). ``set_timesteps`` builds the schedule;
:meth:`solve` hands it to sfd's solver. Nothing in here holds solver state.
"""

from __future__ import annotations

import dataclasses

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from sfd.config import Config, SampleConfig
from sfd.flow.schedule import StagedSchedule, staged_schedule
from sfd.flow.solvers import Solution, VelocityFn, solve
from sfd.latents.composite import LatentLayout


class SFDScheduler(SchedulerMixin, ConfigMixin):
    """The run's sampler: Δt, solver, step count, boundary rule, shift and guidance defaults."""

    config_name = "scheduler_config.json"
    order = 1

    @register_to_config
    def __init__(
        self,
        delta_t: float = 0.3,
        method: str = "heun",
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
    ) -> None:
        self.sample_config()  # validates every field now, with sfd's messages
        self.schedule: StagedSchedule | None = None
        self.timesteps = torch.zeros(0)

    @classmethod
    def from_sfd_config(cls, config: Config) -> SFDScheduler:
        s = config.sample
        return cls(
            delta_t=config.flow.delta_t,
            method=s.method,
            num_inference_steps=s.num_steps,
            boundary=s.boundary,
            timestep_shift=s.timestep_shift,
            atol=s.atol,
            rtol=s.rtol,
            compute_batch=s.compute_batch,
            cfg_scale_tex=s.cfg_scale_tex,
            cfg_scale_sem=s.cfg_scale_sem,
            cfg_interval_tex=tuple(s.cfg_interval_tex),
            cfg_interval_sem=tuple(s.cfg_interval_sem),
            guide=s.guide,
        )

    def sample_config(self, **changes) -> SampleConfig:
        """The sfd ``SampleConfig`` of this scheduler, with ``changes`` (sfd field names)."""
        c = self.config
        base = SampleConfig(
            method=c.method,
            num_steps=int(c.num_inference_steps),
            boundary=c.boundary,
            compute_batch=int(c.compute_batch),
            atol=float(c.atol),
            rtol=float(c.rtol),
            timestep_shift=float(c.timestep_shift),
            cfg_scale_tex=float(c.cfg_scale_tex),
            cfg_scale_sem=float(c.cfg_scale_sem),
            cfg_interval_tex=tuple(float(v) for v in c.cfg_interval_tex),
            cfg_interval_sem=tuple(float(v) for v in c.cfg_interval_sem),
            guide=c.guide,
        )
        return dataclasses.replace(base, **changes)

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: torch.device | str | None = None,
        method: str | None = None,
    ) -> None:
        """Build the staged schedule; ``timesteps`` is its global-time grid tau (K + 1,)."""
        s = self.sample_config(
            **({"num_steps": num_inference_steps} if num_inference_steps else {}),
            **({"method": method} if method else {}),
        )
        if s.method == "dopri5":
            self.schedule = None
            self.timesteps = torch.tensor([0.0, 1.0 + self.config.delta_t], device=device)
            return
        self.schedule = staged_schedule(
            s.num_steps, self.config.delta_t, s.timestep_shift, s.boundary
        )
        self.timesteps = self.schedule.tau.to(device)

    def solve(
        self,
        velocity_fn: VelocityFn,
        noise: torch.Tensor,
        layout: LatentLayout,
        sample: SampleConfig,
        keep_trajectory: bool = False,
    ) -> Solution:
        """Integrate from ``noise`` with sfd's solver (the settings of ``sample``)."""
        self.set_timesteps(sample.num_steps, noise.device, sample.method)
        return solve(
            velocity_fn,
            noise,
            method=sample.method,
            layout=layout,
            schedule=self.schedule,
            delta_t=float(self.config.delta_t),
            atol=sample.atol,
            rtol=sample.rtol,
            keep_trajectory=keep_trajectory,
            boundary=sample.boundary,
        )
