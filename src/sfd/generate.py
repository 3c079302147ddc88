"""The one generation path: image indices -> seeds and labels -> noise -> staged ODE -> latents.

Each image's initial noise comes from its own CPU generator seeded by ``seed + index``, in
float32, so an image depends only on its index: not on batch size, order or process count
(EDM2's per-image seeding; every other peer seeds per rank). Guidance follows METHOD.md §5.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from sfd.config import Config, SampleConfig
from sfd.flow.guidance import Guidance, autoguidance_velocity, cfg_velocity, plain_velocity
from sfd.flow.schedule import staged_schedule
from sfd.flow.solvers import Solution, solve
from sfd.latents.composite import LatentLayout, LatentStats


def image_noise(indices: Sequence[int], shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """(N, *shape) float32 noise on the CPU; row i drawn from a generator seeded seed + index."""
    return torch.stack(
        [
            torch.randn(shape, generator=torch.Generator().manual_seed(seed + int(i)))
            for i in indices
        ]
    )


def balanced_labels(indices: Sequence[int], num_classes: int) -> torch.Tensor:
    """Label of image i is i mod num_classes: N/num_classes per class when N is a multiple."""
    return torch.tensor([int(i) % num_classes for i in indices], dtype=torch.long)


def guidance_of(sample: SampleConfig) -> Guidance:
    return Guidance(
        sample.cfg_scale_tex, sample.cfg_scale_sem, sample.cfg_interval_tex, sample.cfg_interval_sem
    )


def velocity_function(
    model: nn.Module,
    y: torch.Tensor,
    sample: SampleConfig,
    layout: LatentLayout,
    guide_model: nn.Module | None = None,
):
    """The velocity function the solver calls, with the configured guidance."""
    guidance = guidance_of(sample)
    if sample.guide == "autoguidance":
        if guide_model is None:
            raise ValueError("sample.guide='autoguidance' needs a guide model (--guide RUN)")
        if not guidance.active:
            raise ValueError("AutoGuidance needs a scale != 1 (sample.cfg_scale_tex/_sem)")
        return autoguidance_velocity(model, guide_model, y, guidance, layout)
    if guidance.active:
        return cfg_velocity(model, y, guidance, layout)
    return plain_velocity(model, y)


@dataclass
class LatentSampler:
    """Samples composite latents from a model with a fixed configuration."""

    model: nn.Module
    config: Config
    stats: LatentStats
    guide_model: nn.Module | None = None
    device: torch.device | str = "cpu"

    @property
    def layout(self) -> LatentLayout:
        return LatentLayout(self.config.latent.tex_channels, self.config.latent.sem_channels)

    @torch.no_grad()
    def sample(
        self,
        indices: Sequence[int],
        labels: torch.Tensor | None = None,
        seed: int = 0,
        keep_trajectory: bool = False,
    ) -> Solution:
        """Normalised latents for image ``indices`` (labels default to balanced)."""
        lat, s = self.config.latent, self.config.sample
        if labels is None:
            labels = balanced_labels(indices, self.config.model.num_classes)
        x = image_noise(indices, (lat.channels, lat.size, lat.size), seed).to(self.device)
        y = labels.to(self.device)
        fn = velocity_function(self.model, y, s, self.layout, self.guide_model)
        schedule = None
        if s.method != "dopri5":
            schedule = staged_schedule(
                s.num_steps, self.config.flow.delta_t, s.timestep_shift, s.boundary
            )
        return solve(
            fn,
            x,
            method=s.method,
            layout=self.layout,
            schedule=schedule,
            delta_t=self.config.flow.delta_t,
            atol=s.atol,
            rtol=s.rtol,
            keep_trajectory=keep_trajectory,
            boundary=s.boundary,
        )

    def texture_latents(self, final: torch.Tensor) -> torch.Tensor:
        """Drop the semantic part and de-normalise the texture part for the pixel decoder."""
        return self.layout.tex(self.stats.denormalize(final))
