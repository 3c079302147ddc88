"""The one generation path: image indices -> seeds and labels -> noise -> staged ODE -> latents.

Each image's initial noise comes from its own CPU generator seeded by ``seed + index``, in
float32, so an image depends only on its index: not on batch size, order or process count
(EDM2's per-image seeding; every other peer seeds per rank). Guidance follows docs/METHOD.md §5.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from sfd.config import Config, SampleConfig
from sfd.data.images import read_png, write_npz_streaming, write_png
from sfd.flow.guidance import Guidance, guided_velocity
from sfd.flow.numerics import FixedBatch, to_uint8
from sfd.flow.run_path import path_of
from sfd.flow.schedule import StagedSchedule, path_schedule
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
    return guided_velocity(model, y, guidance_of(sample), layout, sample.guide, guide_model)


def sampling_schedule(config: Config, num_steps: int | None = None) -> StagedSchedule:
    """The fixed-step schedule the run samples with (``num_steps`` default: the run's); a
    diffusers export stores it (``sfd.ecosystem``)."""
    s = config.sample
    path = path_of(config.flow)  # a learned one when the run has one, else SFD's offset
    return path_schedule(num_steps or s.num_steps, path, s.timestep_shift, s.boundary)


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
        k = s.compute_batch
        guide = None if self.guide_model is None else FixedBatch(self.guide_model, k)
        fn = velocity_function(FixedBatch(self.model, k), y, s, self.layout, guide)
        schedule = None if s.method == "dopri5" else sampling_schedule(self.config)
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
            path=path_of(self.config.flow),
        )

    def texture_latents(self, final: torch.Tensor) -> torch.Tensor:
        """Drop the semantic part and de-normalise the texture part for the pixel decoder."""
        return self.layout.tex(self.stats.denormalize(final))


# --------------------------------------------------------------------------------------------
# The generation job: index-aligned chunks of ``batch_size`` images -> decoded uint8 images on
# disk, resumable and split across processes by chunk. The model and the decoder always run on
# ``sample.compute_batch`` rows (FixedBatch), so with a fixed-step solver an image depends only
# on its index: not on the batch size, the process count, the order or the resume point.
# dopri5 shares its step sizes across the images solved together, so with dopri5 an image also
# depends on its chunk (on ``batch_size``), as in every batched adaptive sampler.


def chunk_indices(chunk: int, size: int) -> list[int]:
    return list(range(chunk * size, (chunk + 1) * size))


@dataclass
class GenerationJob:
    """Generate images ``[0, num)`` into ``out_dir/images/NNNNNN.png`` and ``samples.npz``."""

    sampler: LatentSampler
    decoder: nn.Module | None
    out_dir: Path
    num: int
    batch_size: int = 16
    seed: int = 0
    labels: torch.Tensor | None = None  # (num,) given labels; default balanced
    nfe: list[int] = field(default_factory=list)  # velocity evaluations of each solve so far

    def label_of(self, indices: Sequence[int]) -> torch.Tensor:
        given = self.labels
        balanced = balanced_labels(indices, self.sampler.config.model.num_classes)
        if given is None:
            return balanced
        return torch.tensor(
            [int(given[i]) if i < self.num else int(balanced[k]) for k, i in enumerate(indices)],
            dtype=torch.long,
        )

    def chunk_done(self, chunk: int, size: int) -> bool:
        return all(self.png_path(i).exists() for i in chunk_indices(chunk, size) if i < self.num)

    def png_path(self, index: int) -> Path:
        return self.out_dir / "images" / f"{index:06d}.png"

    @torch.no_grad()
    def images(self, indices: Sequence[int]) -> torch.Tensor:
        """uint8 (B, H, W, C) images for exactly these indices (one solve, one decode)."""
        sol = self.sampler.sample(indices, self.label_of(indices), seed=self.seed)
        self.nfe.append(sol.nfe)
        z = self.sampler.texture_latents(sol.final)
        if self.decoder is None:
            raise ValueError("no pixel decoder: pass --decoder or set latent.texture_autoencoder")
        k = self.sampler.config.sample.compute_batch
        decoded = [
            self.decoder.decode(z[torch.arange(lo, lo + k).clamp(max=len(z) - 1)])[
                : min(k, len(z) - lo)
            ]
            for lo in range(0, len(z), k)
        ]
        return to_uint8(torch.cat(decoded).cpu())

    def run(self, rank: int = 0, world: int = 1, progress: bool = True) -> int:
        """Generate this rank's unfinished chunks; returns how many images it wrote."""
        size = self.batch_size
        chunks = [k for k in range(-(-self.num // size)) if k % world == rank]
        todo = [k for k in chunks if not self.chunk_done(k, size)]
        (self.out_dir / "images").mkdir(parents=True, exist_ok=True)
        written = 0
        for k in tqdm(todo, desc="sample", unit="chunk", disable=not progress):
            idx = chunk_indices(k, size)
            for i, img in zip(idx, self.images(idx), strict=True):
                if i < self.num:
                    write_png(self.png_path(i), img)
                    written += 1
        return written

    def write_npz(self) -> Path:
        """Assemble ``samples.npz`` (ADM layout: ``arr_0`` uint8 NHWC, ``arr_1`` labels)."""
        missing = [i for i in range(self.num) if not self.png_path(i).exists()]
        if missing:
            raise ValueError(
                f"{len(missing)} images are missing (first: {missing[0]}); rerun "
                f"the sampling job to finish them"
            )
        target = self.out_dir / "samples.npz"
        first = read_png(self.png_path(0))
        write_npz_streaming(
            target,
            (read_png(self.png_path(i)) for i in range(self.num)),
            (self.num, *first.shape),
            self.label_of(range(self.num)).numpy(),
        )
        return target
