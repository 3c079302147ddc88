"""Sampling a run to disk: everything ``sfd sample`` does, as library functions.

:func:`generate_to_dir` loads a checkpoint, applies a published sampler and ``sample.*``
overrides, locks the job's settings in ``OUT/generation.json`` (a rerun must use the same ones,
and resumes), resolves the pixel decoder from the checkpoint's config
(:func:`sfd.api.resolve_decoder`) and runs :class:`sfd.generate.GenerationJob` on this rank's
chunks. :func:`write_latents` writes de-normalised composite latents instead of images. Both are
torchrun-aware through :mod:`sfd.distributed`; the process group belongs to the caller
(process-level state lives in entry points: docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sfd import distributed
from sfd.api import load_checkpoint, resolve_decoder
from sfd.config import Config, apply_overrides
from sfd.data.tensor_files import atomic_save_safetensors
from sfd.errors import OverrideError, UsageError
from sfd.generate import GenerationJob, LatentSampler, balanced_labels
from sfd.hardware import require_compiler
from sfd.latents.texture import load_texture_autoencoder
from sfd.locks import claim_settings
from sfd.model.compile import compile_blocks
from sfd.recipes import apply_sampler, describe_sampler, is_release_sampler

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SampleResult:
    """What a sampling job left in ``out``: ``written`` new items of ``num``, and its files."""

    out: Path
    num: int
    written: int
    npz: Path | None = None  # samples.npz (images; written by rank 0)
    latents: Path | None = None  # latents.safetensors (latents_only)


def sampling_config(cfg: Config, sampler_name: str | None, overrides: tuple[str, ...]) -> Config:
    """A checkpoint's config with a published sampler, then ``sample.*`` overrides (others are
    refused: sampling cannot change the trained model)."""
    if sampler_name is not None:
        cfg = apply_sampler(cfg, sampler_name)
    for item in overrides:
        if not item.startswith("sample."):
            raise OverrideError(f"sampling accepts only sample.* overrides; got {item!r}")
    try:
        return apply_overrides(cfg, list(overrides))
    except OverrideError:
        raise
    except ValueError as err:
        raise OverrideError(str(err)) from None


def log_sampler(cfg: Config, sampler_name: str | None, overrides: tuple[str, ...]) -> None:
    """One line: the sampler in use, where its settings come from, and whether it is the
    release's (imported release YAMLs store it) or sfd's exact boundary rule."""
    source = f"--sampler {sampler_name}" if sampler_name else "the checkpoint's settings"
    if overrides:
        source += " with --set"
    if is_release_sampler(cfg.sample):
        what = "the release's sampler; --set sample.boundary=exact for sfd's rule"
    else:
        what = "not the release's published sampler (sfd presets: --sampler release)"
    log.info("sampler: %s (%s: %s)", describe_sampler(cfg.sample), source, what)


def compile_for_sampling(device: torch.device | str, *models: torch.nn.Module | None) -> None:
    """``sfd sample --compile``: each model's transformer blocks compiled in place, one graph per
    block (what the release does for its inference). The sampler always runs a model on
    ``sample.compute_batch`` rows, so the blocks compile once. One ``ConfigError`` where this
    machine cannot build the kernels."""
    require_compiler(device, "--compile", "sample without --compile")
    for model in models:
        if model is not None:
            compile_blocks(model)


def check_generation_settings(out: Path, settings: dict) -> None:
    """Record a job's settings; a rerun into the same directory must use the same ones."""
    what, hint = "a sampling job", "use a new --out"
    claim_settings(out / "generation.json", settings, what, hint, write=distributed.is_main())
    distributed.barrier()


def read_labels(path: str | Path, num: int, num_classes: int) -> torch.Tensor:
    """``num`` class labels in [0, num_classes) from a .npy or text file."""
    path = str(path)
    arr = np.load(path) if path.endswith(".npy") else np.loadtxt(path, dtype=np.int64)
    labels = torch.as_tensor(np.asarray(arr, dtype=np.int64)).reshape(-1)
    if labels.numel() != num or labels.min() < 0 or labels.max() >= num_classes:
        raise UsageError(
            f"--labels: {path} must hold {num} labels in [0, {num_classes}); got "
            f"{labels.numel()} in [{labels.min()}, {labels.max()}]"
        )
    return labels


def write_latents(
    sampler: LatentSampler,
    out: Path,
    num: int,
    seed: int = 0,
    batch_size: int = 16,
    labels: torch.Tensor | None = None,
) -> Path:
    """De-normalised composite latents of images [0, num) with ``labels`` (default balanced),
    in ``out/latents.safetensors`` (never overwritten)."""
    target = Path(out) / "latents.safetensors"
    if target.exists():
        raise FileExistsError(f"{target} exists; choose another --out (nothing is overwritten)")
    if labels is None:
        labels = balanced_labels(range(num), sampler.config.model.num_classes)
    parts = []
    for start in range(0, num, batch_size):
        idx = list(range(start, min(num, start + batch_size)))
        sol = sampler.sample(idx, labels[idx], seed=seed)
        parts.append(sampler.stats.denormalize(sol.final).cpu())
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_save_safetensors(
        target,
        {"latents": torch.cat(parts), "labels": labels},
        {"config": sampler.config.to_json(), "seed": str(seed)},
    )
    return target


def generate_to_dir(
    run: str | Path,
    out: str | Path,
    num: int = 16,
    seed: int = 0,
    batch_size: int = 16,
    *,
    guide: str | Path | None = None,
    decoder: str | Path | None = None,
    labels_file: str | Path | None = None,
    sampler_name: str | None = None,
    overrides: tuple[str, ...] = (),
    latents_only: bool = False,
    compile: bool = False,
    device: torch.device | str = "cpu",
) -> SampleResult:
    """Images ``[0, num)`` of ``run`` (PNGs + ADM-style ``samples.npz``) in ``out``; resumable.

    Image i uses seed ``seed + i``; ``labels_file`` holds ``num`` labels (default balanced);
    ``decoder`` defaults to the one the run's config names (:func:`resolve_decoder`). Under a
    process group each rank writes its chunks and rank 0 assembles ``samples.npz``.
    ``compile``: the models' blocks compiled (:func:`compile_for_sampling`).
    """
    model, ckpt = load_checkpoint(run, device)
    cfg = sampling_config(ckpt.config, sampler_name, tuple(overrides))
    if distributed.is_main():
        log_sampler(cfg, sampler_name, tuple(overrides))
    guide_model = load_checkpoint(guide, device)[0] if guide else None
    if compile:
        compile_for_sampling(device, model, guide_model)
    sampler = LatentSampler(model, cfg, ckpt.stats, guide_model, device)
    out = Path(out)
    labels = read_labels(labels_file, num, cfg.model.num_classes) if labels_file else None
    if latents_only:
        target = write_latents(sampler, out, num, seed, batch_size, labels)
        return SampleResult(out, num, num, latents=target)
    decoder_path = decoder or resolve_decoder(cfg, ckpt.path.parent.parent)
    settings = {
        "run": str(Path(run).resolve()),
        "num": num,
        "seed": seed,
        "batch_size": batch_size,
        "sample": cfg.to_dict()["sample"],
        "guide": str(guide),
        "labels": str(labels_file),
    }
    # compiled kernels may round differently: a rerun must not mix the two
    check_generation_settings(out, settings | ({"compile": True} if compile else {}))
    decoder_model = load_texture_autoencoder(decoder_path).to(device).eval()
    job = GenerationJob(sampler, decoder_model, out, num, batch_size, seed, labels)
    written = job.run(distributed.rank(), distributed.world_size())
    distributed.barrier()
    npz = None
    if distributed.is_main():
        npz = out / "samples.npz"
        if not npz.exists():
            npz = job.write_npz()
    return SampleResult(out, num, written, npz=npz)
