"""The one generation function: (model, labels, per-image noise, sample settings) -> latents.

:func:`sample_latents` is every sample sfd draws: ``sfd sample``, the demo and the ablation
through :mod:`sfd.generate`, the diffusers pipeline (``SFDPipeline``, and ``sfd app`` over it)
directly. It wraps the model (and the AutoGuidance guide) to run on
``compute_batch`` rows at a time, builds the guided velocity function (docs/METHOD.md §5) and
hands it to the registry's solver (:data:`.solvers.SOLVERS`) on the fixed-step schedule or
along the progress path (docs/METHOD.md §4).

The per-image seed rule lives here too: image i's noise is drawn in float32 on the CPU from its
own generator, seeded ``seed + i`` (:func:`image_generators`, :func:`image_noise`), so an image
depends on its index only, not on batch size, order or process count (EDM2's per-image
seeding). The pipeline takes diffusers' ``generator`` argument instead of seeds; it draws with
:func:`draw_noise`, which :func:`image_noise` is made of, so ``image_generators(seed, n)`` gives
``sfd sample --seed seed``'s noise.

Why in ``sfd.flow`` and not in ``sfd.generate``: a diffusers export carries this file
verbatim beside the pipeline (docs/ECOSYSTEM.md), so an export samples with this very
function without sfd installed. It therefore imports only torch and its siblings, and takes
the settings by their field names (:class:`SampleSettings`, the scheduler's; sfd's
``SampleConfig`` has the same fields), not ``sfd.config``'s class. :mod:`sfd.generate` keeps what
needs the rest of the package: the run's config and path, chunks, decoding and files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch
from torch import nn

from .guidance import Guidance, guided_velocity
from .numerics import FixedBatch
from .path import Layout
from .progress import ProgressPath
from .schedule import BOUNDARY_RULES, StagedSchedule, path_schedule
from .solvers import Solution, VelocityFn, solve, solver

GUIDES = ("cfg", "autoguidance")
_TYPES = {
    "str": str,
    "int": int,
    "float": float,
    "tuple[float, float]": lambda v: tuple(map(float, v)),
}


@dataclass(frozen=True)
class SampleSettings:
    """One sampling call's settings, by the field names of sfd's ``sample`` config section
    (``SampleConfig``, which every function here takes in its place). The diffusers scheduler
    builds them from its config: JSON numbers and lists are taken as the field's type."""

    method: str
    num_steps: int
    boundary: str
    compute_batch: int
    atol: float
    rtol: float
    timestep_shift: float
    cfg_scale_tex: float
    cfg_scale_sem: float
    cfg_interval_tex: tuple[float, float]
    cfg_interval_sem: tuple[float, float]
    guide: str

    def __post_init__(self) -> None:
        for f in fields(self):
            object.__setattr__(self, f.name, _TYPES[f.type](getattr(self, f.name)))
        solver(self.method)  # an unknown name: the registry's error, listing the known ones
        for name, ok, want in (
            ("boundary", self.boundary in BOUNDARY_RULES, f"one of {BOUNDARY_RULES}"),
            ("guide", self.guide in GUIDES, f"one of {GUIDES}"),
            ("num_steps", self.num_steps >= 1, "an integer >= 1"),
            ("compute_batch", self.compute_batch >= 1, "an integer >= 1"),
        ):
            if not ok:
                raise ValueError(f"{name} must be {want}; got {getattr(self, name)!r}")


def image_generators(seed: int, num: int, start: int = 0) -> list[torch.Generator]:
    """One CPU generator per image, seeded ``seed + index`` (``sfd sample``'s rule)."""
    return [torch.Generator().manual_seed(seed + i) for i in range(start, start + num)]


def draw_noise(
    generators: Sequence[torch.Generator | None], shape: tuple[int, ...]
) -> torch.Tensor:
    """(N, *shape) float32 noise on the CPU, row i drawn from ``generators[i]`` (on its device;
    None: torch's global generator)."""
    draws = [
        torch.randn(shape, generator=g, device=g.device if g is not None else "cpu")
        for g in generators
    ]
    return torch.stack([d.float().cpu() for d in draws])


def image_noise(indices: Sequence[int], shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """(N, *shape) float32 noise on the CPU; row i drawn from a generator seeded seed + index."""
    return draw_noise([torch.Generator().manual_seed(seed + int(i)) for i in indices], shape)


def guidance_of(settings: SampleSettings) -> Guidance:
    """The per-part guidance scales and intervals of ``settings``."""
    return Guidance(
        settings.cfg_scale_tex,
        settings.cfg_scale_sem,
        settings.cfg_interval_tex,
        settings.cfg_interval_sem,
    )


def velocity_function(
    model: nn.Module,
    labels: torch.Tensor,
    settings: SampleSettings,
    layout: Layout,
    guide: nn.Module | None = None,
) -> VelocityFn:
    """The velocity function the solver calls, guided as ``settings`` say."""
    return guided_velocity(model, labels, guidance_of(settings), layout, settings.guide, guide)


def fixed_step_schedule(
    settings: SampleSettings, path: ProgressPath, num_steps: int | None = None
) -> StagedSchedule:
    """The grid a fixed-step solver walks along ``path`` (``num_steps`` default: the
    settings'), at the settings' timestep shift and boundary rule."""
    steps = num_steps or settings.num_steps
    return path_schedule(steps, path, settings.timestep_shift, settings.boundary)


def integrate(
    velocity_fn: VelocityFn,
    noise: torch.Tensor,
    settings: SampleSettings,
    layout: Layout,
    path: ProgressPath | None,
    schedule: StagedSchedule | None = None,
    keep_trajectory: bool = False,
) -> Solution:
    """Solve from ``noise`` with the settings' solver: a fixed-step one on ``schedule``
    (default: :func:`fixed_step_schedule` of ``path``), an adaptive one along ``path``."""
    fixed = solver(settings.method).fixed_step
    if fixed and schedule is None:
        schedule = fixed_step_schedule(settings, path)
    return solve(
        velocity_fn,
        noise,
        method=settings.method,
        layout=layout,
        schedule=schedule if fixed else None,
        path=path,
        atol=settings.atol,
        rtol=settings.rtol,
        keep_trajectory=keep_trajectory,
        boundary=settings.boundary,
    )


def sample_latents(
    model: nn.Module,
    labels: torch.Tensor,
    noise: torch.Tensor,
    settings: SampleSettings,
    layout: Layout,
    path: ProgressPath | None,
    schedule: StagedSchedule | None = None,
    guide: nn.Module | None = None,
    keep_trajectory: bool = False,
) -> Solution:
    """Normalised composite latents of the images whose initial ``noise`` and ``labels`` are
    given (both on the model's device): the model (and AutoGuidance's ``guide``) on
    ``settings.compute_batch`` rows at a time, guided as the settings say, solved from the noise
    (:func:`integrate`; ``path`` may be None where a fixed-step ``schedule`` is given)."""
    k = settings.compute_batch
    guide_batched = None if guide is None else FixedBatch(guide, k)
    fn = velocity_function(FixedBatch(model, k), labels, settings, layout, guide_batched)
    return integrate(fn, noise, settings, layout, path, schedule, keep_trajectory)
