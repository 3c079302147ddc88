"""``sfd ablate``: the paper's ablation grid as one resumable command, with seeds and curves.

Pan et al. 2026 (Semantics Lead the Way, CVPR 2026), Table 3 and Fig. 5 (METHOD.md §7): on
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
(:mod:`sfd.pipeline.ablate_report`) is rebuilt from whatever results exist.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from pathlib import Path

from sfd.config import Config
from sfd.data.shards import atomic_write_json
from sfd.locks import DirLock as _JobLock
from sfd.pipeline.ablate_eval import (
    AblationData,
    Evaluator,
    prepare_data,
    sample_images,
)
from sfd.pipeline.ablate_grid import (
    GRID_MODEL,
    MAIN_ROWS,
    SWEEP,
    AblationSettings,
    Row,
    base_config,
    parse_row,
    parse_shard,
    row_config,
    row_delta_t,
    sample_config,
    sweep_rows,
)

__all__ = [
    "GRID_MODEL", "MAIN_ROWS", "SWEEP", "AblationData", "AblationSettings", "Evaluator", "Row",
    "base_config", "parse_row", "parse_shard", "prepare_data", "result_path", "row_config",
    "row_delta_t", "run_ablation", "sample_config", "sample_images", "sweep_rows",
]  # fmt: skip

log = logging.getLogger("sfd.ablate")

# --------------------------------------------------------------------------------------------
# The grid


def result_path(out: Path, row: str, seed: int, step: int, cfg_scale: float) -> Path:
    return out / "results" / row / f"seed{seed}" / f"step{step:07d}_cfg{cfg_scale:g}.json"


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
    from sfd.latents.texture import load_texture_autoencoder
    from sfd.pipeline.ablate_report import write_report
    from sfd.training.checkpoint import checkpoint_dir
    from sfd.training.loop import train

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
    jobs = [job for k, job in enumerate(settings.jobs()) if k % n == i]
    evaluator = None
    decoder_net = None
    work: dict[str, list] = {"trained": [], "evaluated": [], "skipped": []}
    for row_name, seed in jobs:
        row = parse_row(row_name)
        cfg = row_config(base, row, base.latent.sem_channels, seed, settings.steps)
        run_dir = out / "runs" / row_name / f"seed{seed}"
        todo = _evaluations(out, settings, row_name, seed)
        if not todo:
            continue
        lock = _JobLock(run_dir)
        if not lock.acquire():
            log.info("%s seed %d: another live process holds %s; skipped", row_name, seed, lock)
            work["skipped"].append([row_name, seed])
            continue
        ckpt_steps = settings.checkpoint_steps()
        if not all((checkpoint_dir(run_dir, k) / "ema.safetensors").exists() for k in ckpt_steps):
            t0 = time.perf_counter()
            train(
                _with_checkpoints(cfg, ckpt_steps),
                data.latents[row.semantic],
                run_dir,
                device=device,
                progress=progress,
            )
            work["trained"].append([row_name, seed, round(time.perf_counter() - t0, 1)])
        if evaluator is None:
            evaluator = Evaluator(out, data, settings.num_samples, device)
            decoder_net = load_texture_autoencoder(data.decoder).to(device).eval()
        for step, scale in todo:
            t0 = time.perf_counter()
            images, labels = sample_images(
                checkpoint_dir(run_dir, step), decoder_net, settings, scale, device
            )
            metrics = evaluator.metrics(evaluator.features(images), labels)
            record = {
                "row": row_name,
                "seed": seed,
                "step": step,
                "cfg_scale": scale,
                "delta_t": row.delta_t,
                "semantic": row.semantic,
                "repa": row.repa,
                **metrics,
                "eval_seconds": round(time.perf_counter() - t0, 1),
            }
            target = result_path(out, row_name, seed, step, scale)
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(target, record)
            work["evaluated"].append([row_name, seed, step, scale])
            log.info("%s seed %d step %d cfg %g: %s", row_name, seed, step, scale, metrics)
        lock.release()
    if evaluator is None:  # nothing left to do here: the reference may still be missing
        ref = sorted(out.glob(f"reference_{settings.num_samples}.json"))
        reference_info = json.loads(ref[0].read_text()) if ref else None
    else:
        reference_info = evaluator.reference
    summary = write_report(out, settings, reference_info, data.info)
    summary["work"] = work
    return summary


def _with_checkpoints(cfg: Config, steps: list[int]) -> Config:
    """Checkpoint every gap of the evenly spaced list (they are all equal up to rounding)."""
    gaps = {b - a for a, b in zip([0, *steps[:-1]], steps, strict=True)}
    every = math.gcd(*gaps) if gaps else steps[-1]
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, ckpt_every=every))


def _evaluations(out: Path, s: AblationSettings, row: str, seed: int) -> list[tuple[int, float]]:
    """The (step, cfg scale) evaluations of one run that have no cached result yet."""
    wanted = [(k, s.cfg_scale) for k in s.checkpoint_steps()]
    if row in MAIN_ROWS:
        wanted += [(s.steps, w) for w in s.cfg_sweep if w != s.cfg_scale]
    return [(k, w) for k, w in wanted if not result_path(out, row, seed, k, w).exists()]


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
