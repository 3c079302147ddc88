"""``sfd ablate``: the paper's ablation grid as one resumable command, with seeds and curves.

Pan et al. 2026 (Semantics Lead the Way, CVPR 2026), Table 3 and Fig. 5 (docs/METHOD.md §7): on
ImageNet 256, LightningDiT-XL baseline 8.17 -> +REPA 7.08 -> +SemVAE latent, synchronous
5.24 -> semantic-first (Δt = 0.3) 3.03 FID; a PCA semantic latent (ReDi, Kouzelis et al. 2025)
4.06 with Δt = 0.3 (5.33 at Δt = 0); the Δt curve has its optimum at 0.3. This module runs
that grid on any latent set (by default the demo's Fashion-MNIST pipeline):

===============  ================================  =====  =====
row              semantic latent                   Δt     REPA
===============  ================================  =====  =====
``baseline``     none (texture only)               --     no
``repa``         none (texture only)               --     yes
``semvae-sync``  Semantic VAE                      0      yes
``sfd``          Semantic VAE                      0.3    yes
``redi``         PCA of the same encoder features  0      yes
``redi-sf``      PCA of the same encoder features  0.3    yes
``dt-X``         Semantic VAE                      X      yes
===============  ================================  =====  =====

Every (row, training seed) is one training run; its checkpoints are evaluated with identical
sampler settings and the same per-image sampling seeds, so each row is a convergence curve with
a seed band. Every evaluation is cached as one JSON file: a rerun or a crash resumes, nothing
is recomputed or overwritten; ``shard=(i, n)`` gives a process every n-th job. The summary
(:mod:`sfd.experiments.ablate_report`) is rebuilt from whatever results exist.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from sfd.config import Config
from sfd.data.tensor_files import atomic_write_json
from sfd.experiments.ablate_eval import (
    AblationData,
    Evaluator,
    prepare_data,
    sample_images,
)
from sfd.experiments.ablate_grid import (
    GRID_MODEL,
    AblationSettings,
    base_config,
    parse_shard,
    row_config,
    sample_config,
)
from sfd.experiments.ablate_report import write_report
from sfd.experiments.ablate_rows import (
    MAIN_ROWS,
    SWEEP,
    Row,
    is_paired,
    on_nfe_axis,
    parse_row,
    row_delta_t,
    sweep_rows,
)
from sfd.experiments.ablate_schedules import with_learned_schedule
from sfd.latents.texture import load_texture_autoencoder
from sfd.locks import DirLock as _JobLock
from sfd.training.checkpoint import checkpoint_dir

__all__ = [
    "GRID_MODEL",
    "MAIN_ROWS",
    "SWEEP",
    "AblationData",
    "AblationSettings",
    "Evaluator",
    "Row",
    "base_config",
    "parse_row",
    "parse_shard",
    "prepare_data",
    "result_path",
    "row_config",
    "row_delta_t",
    "run_ablation",
    "sample_config",
    "sample_images",
    "sweep_rows",
]

log = logging.getLogger("sfd.ablate")

# --------------------------------------------------------------------------------------------
# The grid


def result_path(
    out: Path, row: str, seed: int, step: int, cfg_scale: float, sampler: str | None = None
) -> Path:
    """One evaluation's JSON: the grid's sampler, or ``sampler`` of the NFE axis."""
    tail = "" if sampler is None else f"_{sampler}"
    return out / "results" / row / f"seed{seed}" / f"step{step:07d}_cfg{cfg_scale:g}{tail}.json"


def run_ablation(
    out: str | Path,
    settings: AblationSettings,
    *,
    shard: tuple[int, int] = (0, 1),
    device: str = "cpu",
    latents: Path | None = None,
    features: Path | None = None,
    decoder: Path | None = None,
    reference: Path | None = None,
    demo_settings=None,
    progress: bool = False,
) -> dict:
    """Run (or resume) this shard's part of the grid, then rebuild the summary."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _check_settings(out, settings)
    data = prepare_data(
        out,
        settings,
        latents=latents,
        features=features,
        decoder=decoder,
        reference=reference,
        demo_settings=demo_settings,
        device=device,
    )
    base = base_config(data.meta, settings.overrides)
    for r in settings.rows:  # every row's config is valid before anything trains
        row_config(base, parse_row(r), base.latent.sem_channels, 0, settings.steps)
    _check_settings(out, settings, write=True)
    i, n = shard
    grid = _Grid(out, settings, data, base, device, progress)
    for row_name, seed in [job for k, job in enumerate(settings.jobs()) if k % n == i]:
        grid.run(row_name, seed)
    if grid.evaluator is None:  # nothing left to do here: the reference may still be missing
        ref = sorted(out.glob(f"reference_{settings.num_samples}.json"))
        reference_info = json.loads(ref[0].read_text()) if ref else None
    else:
        reference_info = grid.evaluator.reference
    summary = write_report(out, settings, reference_info, data.info)
    summary["work"] = grid.work
    return summary


@dataclass
class _Grid:
    """This process's jobs of the grid: train a (row, seed) run if its checkpoints are missing,
    then evaluate each of its checkpoints not yet evaluated (one JSON file each)."""

    out: Path
    settings: AblationSettings
    data: AblationData
    base: Config
    device: str
    progress: bool
    evaluator: Evaluator | None = None
    decoder: torch.nn.Module | None = None
    work: dict = field(default_factory=lambda: {"trained": [], "evaluated": [], "skipped": []})

    def run(self, row_name: str, seed: int) -> None:
        row = parse_row(row_name)
        run_dir = self.out / "runs" / row_name / f"seed{seed}"
        todo = _evaluations(self.out, self.settings, row_name, seed)
        if not todo:
            return
        lock = _JobLock(run_dir)
        if not lock.acquire():
            log.info("%s seed %d: another live process holds %s; skipped", row_name, seed, lock)
            self.work["skipped"].append([row_name, seed])
            return
        self._train(row, seed, run_dir)
        if self.evaluator is None:
            self.evaluator = Evaluator(self.out, self.data, self.settings.num_samples, self.device)
            self.decoder = load_texture_autoencoder(self.data.decoder).to(self.device).eval()
        for step, scale, sampler in todo:
            self._evaluate(row, seed, run_dir, step, scale, sampler)
        lock.release()

    def _train(self, row: Row, seed: int, run_dir: Path) -> None:
        # lazy: the training loop imports torch.distributed.checkpoint (~1.5 s): not for --help
        from sfd.training.loop import train

        s = self.settings
        ckpt_steps = s.checkpoint_steps()
        if all((checkpoint_dir(run_dir, k) / "ema.safetensors").exists() for k in ckpt_steps):
            return
        t0 = time.perf_counter()
        cfg = row_config(self.base, row, self.base.latent.sem_channels, seed, s.steps)
        latents = self.data.latents[row.semantic]
        cfg = with_learned_schedule(cfg, row, self.out, latents, seed, s.quick)
        train(
            _with_checkpoints(cfg, ckpt_steps),
            self.data.latents[row.latents],
            run_dir,
            device=self.device,
            progress=self.progress,
        )
        self.work["trained"].append([row.name, seed, round(time.perf_counter() - t0, 1)])

    def _evaluate(
        self, row: Row, seed: int, run_dir: Path, step: int, scale: float, sampler: str | None
    ) -> None:
        t0 = time.perf_counter()
        images, labels, nfe = sample_images(
            checkpoint_dir(run_dir, step), self.decoder, self.settings, scale, self.device, sampler
        )
        metrics = self.evaluator.metrics(self.evaluator.features(images), labels)
        record = {
            "row": row.name,
            "seed": seed,
            "step": step,
            "cfg_scale": scale,
            "delta_t": row.delta_t,
            "semantic": row.semantic,
            "repa": row.repa,
            "sampler": sampler or f"{self.settings.method}-{self.settings.num_steps}",
            "nfe": nfe,
            **metrics,
            "eval_seconds": round(time.perf_counter() - t0, 1),
        }
        target = result_path(self.out, row.name, seed, step, scale, sampler)
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(target, record)
        self.work["evaluated"].append([row.name, seed, step, scale])
        log.info("%s seed %d step %d cfg %g %s: %s", row.name, seed, step, scale, sampler, metrics)


def _with_checkpoints(cfg: Config, steps: list[int]) -> Config:
    """Checkpoint every gap of the evenly spaced list (they are all equal up to rounding)."""
    gaps = {b - a for a, b in zip([0, *steps[:-1]], steps, strict=True)}
    every = math.gcd(*gaps) if gaps else steps[-1]
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, ckpt_every=every))


def _evaluations(out: Path, s: AblationSettings, row: str, seed: int) -> list[tuple]:
    """The (step, cfg scale, sampler) evaluations of one run that have no cached result yet:
    the curve and the guidance sweep with the grid's sampler (None), then the NFE axis."""
    wanted = [(k, s.cfg_scale, None) for k in s.checkpoint_steps()]
    if is_paired(row):
        wanted += [(s.steps, w, None) for w in s.cfg_sweep if w != s.cfg_scale]
    if on_nfe_axis(row, s.nfe_rows):
        own = f"{s.method}-{s.num_steps}"  # the curve's final point already is this one
        wanted += [(s.steps, s.cfg_scale, x) for x in s.nfe_samplers if x != own]
    return [job for job in wanted if not result_path(out, row, seed, *job).exists()]


def _check_settings(out: Path, s: AblationSettings, write: bool = False) -> None:
    """A grid directory holds one protocol: rerunning with another one would mix results.
    It is recorded (``write``) once the inputs are checked, so a refused start leaves none."""
    path = out / "protocol.json"
    proto = s.protocol()
    if path.exists():
        stored = json.loads(path.read_text())
        if stored != proto:
            diffs = [k for k in proto if stored.get(k) != proto[k]]
            raise ValueError(
                f"{out} holds an ablation with another protocol (differs in {', '.join(diffs)}); "
                f"use a new --out or the same settings"
            )
        return
    if write:
        atomic_write_json(path, proto)
