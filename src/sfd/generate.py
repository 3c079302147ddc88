"""The generation job around the one generation function: image indices -> seeds and labels ->
:func:`sfd.flow.latent_sampling.sample_latents` -> latents -> decoded images on disk.

:class:`LatentSampler` turns a run (model, config, latent statistics, optional AutoGuidance
guide) and image indices into latents: image i's noise is seeded ``seed + i`` and its label
defaults to ``i mod num_classes``; the solve itself, guidance included (docs/METHOD.md §5), is
:func:`~sfd.flow.latent_sampling.sample_latents`, the function the diffusers pipeline calls too.
:class:`GenerationJob` writes chunks of decoded images, resumably.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from sfd.config import Config
from sfd.data.images import read_png, write_npz_streaming, write_png
from sfd.flow.latent_sampling import (
    fixed_step_schedule,
    image_noise,
    sample_latents,
    velocity_function,
)
from sfd.flow.numerics import FixedBatch, padded_batches, to_uint8
from sfd.flow.run_path import path_of
from sfd.flow.schedule import StagedSchedule
from sfd.flow.solvers import Solution
from sfd.latents.composite import LatentLayout, LatentStats

__all__ = [
    "FixedBatch",
    "GenerationJob",
    "LatentSampler",
    "balanced_labels",
    "image_noise",
    "sampling_schedule",
    "to_uint8",
    "velocity_function",
]


def balanced_labels(indices: Sequence[int], num_classes: int) -> torch.Tensor:
    """Label of image i is i mod num_classes: N/num_classes per class when N is a multiple."""
    return torch.tensor([int(i) % num_classes for i in indices], dtype=torch.long)


def sampling_schedule(config: Config, num_steps: int | None = None) -> StagedSchedule:
    """The fixed-step schedule the run samples with (``num_steps`` default: the run's); a
    diffusers export stores it (``sfd.ecosystem``)."""
    # a learned path when the run has one, else SFD's offset
    return fixed_step_schedule(config.sample, path_of(config.flow), num_steps)


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
        lat = self.config.latent
        if labels is None:
            labels = balanced_labels(indices, self.config.model.num_classes)
        x = image_noise(indices, (lat.channels, lat.size, lat.size), seed).to(self.device)
        return sample_latents(
            self.model,
            labels.to(self.device),
            x,
            self.config.sample,
            self.layout,
            path_of(self.config.flow),
            guide=self.guide_model,
            keep_trajectory=keep_trajectory,
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
        decoded = [self.decoder.decode(z[rows])[:real] for rows, real in padded_batches(len(z), k)]
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
