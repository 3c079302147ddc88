"""One pipeline run, whatever front-end planned it: ``sfd demo`` (Fashion-MNIST, the demo's
measured sizes) and ``sfd pipeline`` (your images, a budget) each build a :class:`RunPlan`, and
:func:`run_plan` runs it. They differ in the plan, never in the code that runs it.

Stages, each cached in ``OUT/stages.json`` (:mod:`sfd.experiments.stages`) so a rerun resumes where
it stopped: 1-4 the data stages (texture VAE, encoder features, SemVAE, latents), 5 ``sfd``
(training into ``OUT/run``), 6 ``samples`` (PNGs and ``samples.npz`` in ``OUT/samples``, the
pictures ``samples.png``, ``stages.png``, ``curves.png``), 7 ``metrics``
(:mod:`sfd.experiments.run_metrics`); then ``OUT/metrics.json`` gathers what every stage measured.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from sfd.config import Config
from sfd.data.tensor_files import atomic_write_json
from sfd.experiments.estimate import describe_estimate, estimate_stages
from sfd.experiments.ledger import STAGE_FILES, Stages, dataset_settings
from sfd.experiments.run_metrics import evaluate_run
from sfd.experiments.stages import StagedBase, StageSizes, prepare_stages, sample_stage, train_stage
from sfd.figures import STAGE_PICKS, STAGE_STEPS, loss_curves, stage_strip
from sfd.flow.schedule import staged_schedule
from sfd.generate import LatentSampler, to_uint8
from sfd.hardware import cpu_model_name
from sfd.training.logs import read_log

log = logging.getLogger("sfd.demo")


@dataclass(frozen=True)
class RunPlan:
    """Everything one run needs: its images, stage sizes, SFD's config and the sizes of its
    samples and metrics."""

    train_set: Dataset
    test_set: Dataset  # held out: texture-VAE PSNR, SemVAE cosine, the metrics' real images
    names: tuple[str, ...]  # class names, by label
    sizes: StageSizes
    config: Callable[[StagedBase], Config]  # SFD's config, from the finished data stages
    num_samples: int
    metric_images: int  # samples and real images per metric (at most half the test set)
    probe_images: int  # training images the probe classifier learns from
    seed: int = 0
    sample_batch: int = 16
    per_class: int | None = None  # samples per class row of samples.png (default 10)
    picture_class: int = 0  # the class of the one sample drawn stage by stage in stages.png
    in_domain: bool = False  # Fashion-MNIST: also the packaged classifier's FD_FMNIST, accuracy
    classifier_dataset: str = "fashion-mnist"  # whose packaged classifier gives those metrics
    match_classes: bool = False  # metrics on sets cut to the same count per class (metrics.py)


def run_plan(out: str | Path, plan: RunPlan, device: str = "cpu", redo: bool = False) -> dict:
    """Run (or resume) every stage of ``plan`` in ``out``; returns what ``metrics.json`` holds.
    A stage made with other settings is refused, or with ``redo`` recomputed with every stage
    after it. Before any stage runs, the time of those left to run is estimated and logged."""
    _estimate(Path(out), plan, device, redo)
    base = prepare_stages(out, plan.train_set, plan.test_set, plan.sizes, device, redo)
    cfg = plan.config(base)
    train_stage(base, cfg, device)
    shown = {"num": plan.num_samples, "seed": plan.seed, "per_class": plan.per_class}
    shown["picture_class"] = plan.picture_class
    base.stages.run(
        "samples",
        lambda: _samples(base.out, cfg, plan, device),
        {**shown, "sample": dataclasses.asdict(cfg.sample)},
        inputs=("sfd",),
    )
    sizes = {"metric_images": plan.metric_images, "probe_images": plan.probe_images}
    metrics = base.stages.run(
        "metrics",
        lambda: evaluate_run(base, plan, device),
        {
            **sizes,
            "in_domain": plan.in_domain,
            "match_classes": plan.match_classes,
            "held_out": dataset_settings(plan.test_set),
        },
        inputs=("samples", "texture_vae"),
    )
    return _write_metrics(base, metrics, cfg, plan)


def _estimate(out: Path, plan: RunPlan, device: str, redo: bool) -> None:
    """Log the estimated time of each stage left to run (with ``redo``: of every stage, the
    most it can redo) and keep it in ``OUT/estimate.json``."""
    done = {} if redo else Stages(out).finished
    todo = tuple(name for name in STAGE_FILES if name not in done)
    if not todo:
        return
    t0 = time.perf_counter()
    est = estimate_stages(plan, todo, device)
    took = time.perf_counter() - t0
    log.info("%s%s", describe_estimate(est, took), " (--redo: at most)" if redo else "")
    path = out / "estimate.json"
    before = json.loads(path.read_text()) if path.exists() else {}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {**before, **est})


def _samples(out: Path, cfg: Config, plan: RunPlan, device: str) -> dict:
    """Stage 6: class-balanced samples, their grid, the stage picture and the loss curves."""
    sampler, decoder = sample_stage(
        out,
        plan.num_samples,
        plan.seed,
        list(plan.names),
        device,
        batch_size=plan.sample_batch,
        sample=cfg.sample,
        shown=min(plan.num_samples, 100),
        per_class=plan.per_class,
    )
    _stage_picture(sampler, decoder, out / "stages.png", plan.picture_class, seed=plan.seed)
    _curves(out)
    return {"num_samples": plan.num_samples}


@torch.no_grad()
def _stage_picture(sampler: LatentSampler, decoder, path: Path, label: int, seed: int) -> None:
    cfg = sampler.config
    euler = dataclasses.replace(cfg.sample, method="euler", num_steps=STAGE_STEPS)
    one = dataclasses.replace(sampler, config=dataclasses.replace(cfg, sample=euler))
    sol = one.sample([3], torch.tensor([label]), seed=seed, keep_trajectory=True)
    taus = staged_schedule(euler.num_steps, cfg.flow.delta_t).tau.tolist()
    picks = list(STAGE_PICKS)
    states = torch.cat([sol.trajectory[k] for k in picks])
    textures = to_uint8(decoder.decode(sampler.texture_latents(states)).cpu()).numpy()
    sem = sampler.layout.sem(sampler.stats.denormalize(states)).cpu()
    stage_strip([taus[k] for k in picks], textures, sem, cfg.flow.delta_t, path)


def _curves(out: Path) -> None:
    curves = {}
    rows = read_log(out / "run")
    if rows:
        curves["SFD training loss"] = ([r["step"] for r in rows], [r["loss"] for r in rows])
    info = out / "texture_vae" / "train_info.json"
    if info.exists():
        hist = json.loads(info.read_text()).get("history", [])
        curves["texture VAE loss"] = ([r["step"] for r in hist], [r["loss"] for r in hist])
    for path in sorted((out / "semvae").glob("*.json")):
        hist = json.loads(path.read_text()).get("history", [])
        if hist:
            curves["SemVAE loss"] = ([r["step"] for r in hist], [r["loss"] for r in hist])
    if curves:
        loss_curves(curves, out / "curves.png")


def _write_metrics(base: StagedBase, metrics: dict, cfg: Config, plan: RunPlan) -> dict:
    """``OUT/metrics.json``: the metrics, each stage's summary and time, the files skipped,
    the hardware and the model; rewritten only when its content changes."""
    out, stages = base.out, base.stages
    path = out / "metrics.json"
    before = json.loads(path.read_text()) if path.exists() else {}
    result = {
        **metrics,
        "texture_vae_psnr_db": base.texture.get("test_psnr"),
        "semvae_cosine": base.semvae.get("cos"),
        "semvae_mse": base.semvae.get("mse"),
        "stage_seconds": {k: v["seconds"] for k, v in stages.finished.items()},
        "total_seconds": round(sum(v["seconds"] for v in stages.finished.values()), 1),
        "stage_estimates": _read_json(out / "estimate.json"),
        "skipped_files": _skipped(plan.train_set, before.get("skipped_files", [])),
        "run": str(out / "run"),
        "hardware": {
            "machine": platform.machine(),
            "processor": cpu_model_name(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
        },
        "model": {
            "preset": cfg.preset,
            "depth": cfg.model.depth,
            "width": cfg.model.width,
            "latent": [cfg.latent.tex_channels, cfg.latent.sem_channels, cfg.latent.size],
            "num_classes": cfg.model.num_classes,
            "repa_dim": cfg.model.repa_dim,
            "delta_t": cfg.flow.delta_t,
            "train_steps": cfg.train.total_steps,
            "sampler": f"{cfg.sample.method} {cfg.sample.num_steps} steps",
        },
    }
    result = json.loads(json.dumps(result, default=_np_default))
    if before != result:
        atomic_write_json(path, result)
    return result


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def _skipped(dataset, before: list[str]) -> list[str]:
    """Unreadable files skipped in this run or an earlier one (``before``: a resumed run reads
    no image)."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return sorted(set(map(str, getattr(dataset, "skipped", []))) | set(before))


def _np_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value)}")
