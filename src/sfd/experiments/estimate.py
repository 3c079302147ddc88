"""How long each stage of a pipeline run will take on this machine, measured before it starts.

Each estimate is the median of three timed steps (after a warm-up) of the stage's own work, on this
machine, at the run's sizes, times the number of steps or images the stage will do
(:func:`estimate_stages`): the texture VAE's and the SemVAE's training steps (fresh models,
random batches, AdamW), reading one image of the folder (decode and crop), the encoder on a
batch, SFD's training step (:func:`sfd.bench.build_train_step` on the config the run will
train) and its forward at the sampling batch. What it leaves out (start-up, checkpoints, a
machine whose load changes) makes it a guide, not a promise: each stage's real wall time is
kept in ``stages.json`` and beside the estimate in ``metrics.json``.

SFD's step is timed as the training loop runs it (:func:`_as_the_loop_runs`): on the loop's
batches, made by loader threads while the step before runs. That is not a detail: once a
second thread has run torch's parallel kernels, OpenMP (libgomp, the runtime of torch's CPU
wheels) manages more threads than the machine has cores and stops spin-waiting at its
barriers; without that thread, on cores that other processes share, the two threads of a
step spin against each other and the step takes several times as long (README.md, "Time.").
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import torch

from sfd.bench.throughput import build_train_step, time_fn
from sfd.data.images import first_image_shape
from sfd.data.latent_shards import LatentDataset, finalize_latent_set, write_latent_shard
from sfd.experiments.run_metrics import POOL_SIZE
from sfd.figures import STAGE_STEPS
from sfd.flow.solvers import SOLVERS
from sfd.latents.encoders import EfficientNetLite0Encoder
from sfd.latents.repa_targets import repa_targets
from sfd.latents.semvae import SemanticVAE, semvae_loss
from sfd.training.batches import EpochOrder, Prefetch, global_batch
from sfd.training.texture_vae import build_texture_vae, texture_vae_loss

log = logging.getLogger("sfd.demo")
TIMED = 3  # timed steps per measurement, after one warm-up (their median: one step can be
# many times slower than the others on a machine whose cores are shared)
FIXED_SECONDS = {"samples": 3.0, "metrics": 3.0}  # figures, probe fit: measured once, roughly


def _train_step(model: torch.nn.Module, loss: Callable[[], torch.Tensor], device) -> float:
    """Seconds of one AdamW step of ``loss()`` (a warm-up step, the median of TIMED)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss().backward()
        opt.step()

    return time_fn(step, torch.device(device), warmup=1, iters=TIMED)


def _read_seconds(dataset, k: int = 4) -> float:
    """Seconds to read (decode, crop) one image of ``dataset``: the mean over its first ``k``."""
    t0 = time.perf_counter()
    k = min(k, len(dataset))
    for i in range(k):
        dataset[i]
    return (time.perf_counter() - t0) / max(k, 1)


def _texture_step(plan, shape, device) -> float:
    cfg = plan.sizes.texture
    with torch.random.fork_rng(devices=[]):
        vae = build_texture_vae(shape[0], cfg, shape[-1]).to(device).train()
    x = torch.rand(cfg.batch_size, *shape, device=device) * 2 - 1
    gen = torch.Generator().manual_seed(0)
    return _train_step(vae, lambda: texture_vae_loss(vae, x, gen, cfg)["loss"], device)


def _semvae_step(plan, dim: int, grid: int, device) -> float:
    sizes = plan.sizes
    model_cfg = dataclasses.replace(sizes.semvae, in_dim=dim, grid=grid)
    with torch.random.fork_rng(devices=[]):
        model = SemanticVAE(model_cfg).to(device)
    x = torch.randn(sizes.semvae_train.batch_size, dim, grid, grid, device=device)
    noise = torch.randn(len(x), model_cfg.latent_channels, grid, grid, device=device)
    train = sizes.semvae_train

    def loss() -> torch.Tensor:
        recon, mean, logvar = model(x, noise)
        return semvae_loss(recon, x, mean, logvar, train.kl_weight, train.cos_axis)["loss"]

    return _train_step(model, loss, device)


def _per_image(fn: Callable[[torch.Tensor], object], shape, device, n: int = 8) -> float:
    x = torch.rand(n, *shape, device=device) * 2 - 1
    return time_fn(lambda: fn(x), torch.device(device), warmup=1, iters=TIMED) / n


def _sfd(plan, grid: int, dim: int, device) -> tuple[float, float, object]:
    """(seconds per SFD training step, per sampling forward at the sampling batch, config):
    the config the run will train, fitted to the latent set it will have."""
    sizes = plan.sizes
    meta = {"tex_channels": sizes.texture.latent_channels, "size": grid, "repa_dim": dim}
    meta.update(sem_channels=sizes.semvae.latent_channels, num_classes=sizes.num_classes)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "meta.json").write_text(json.dumps(meta))
        logging.disable(logging.INFO)  # the real config logs what it takes from the data
        try:
            cfg = plan.config(SimpleNamespace(latents=Path(tmp), encoder_dim=dim, out=Path(tmp)))
        finally:
            logging.disable(logging.NOTSET)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, compile=False))
    step, _ = build_train_step(cfg, cfg.train.global_batch_size, device)
    train = _as_the_loop_runs(step, cfg, device)
    model, n = step.model.eval(), min(plan.sample_batch, plan.num_samples)
    x = torch.randn(n, cfg.latent.channels, grid, grid, device=device)
    t = torch.full((n,), 0.5, device=device)
    y = torch.zeros(n, dtype=torch.long, device=device)
    with torch.no_grad():
        forward = time_fn(lambda: model(x, t_tex=t, t_sem=t, y=y), torch.device(device), 1, TIMED)
    return train, forward, cfg


def _latent_set(cfg, directory: Path) -> LatentDataset:
    """A latent set in ``directory`` of one global batch of random rows (both views), of the
    shapes, classes and REPA dim ``cfg`` trains on."""
    g = torch.Generator().manual_seed(0)
    lat, n = cfg.latent, cfg.train.global_batch_size

    def draw(channels: int) -> torch.Tensor:
        return torch.randn(n, 2, channels, lat.size, lat.size, generator=g)

    tensors = {"label": torch.arange(n) % cfg.model.num_classes}
    for part, channels in (("tex", lat.tex_channels), ("sem", lat.sem_channels)):
        tensors[f"{part}_mean"] = draw(channels)
        tensors[f"{part}_std"] = 0.05 + 0.1 * draw(channels).abs()
    if cfg.model.repa_dim:
        tensors["repa"] = draw(cfg.model.repa_dim)
    write_latent_shard(directory, 0, tensors)
    finalize_latent_set(directory, cfg.model.num_classes, 1, has_repa=bool(cfg.model.repa_dim))
    return LatentDataset(directory)


def _as_the_loop_runs(step, cfg, device) -> float:
    """Seconds per update of ``step`` (a :class:`sfd.training.step.TrainStep`; a warm-up
    update, the median of TIMED) as :class:`sfd.training.loop.Trainer` runs it: the loop's
    batches (:func:`sfd.training.batches.global_batch`, of a latent set of random rows), made
    by ``max(1, train.num_workers)`` loader threads while the update before runs. Timed on one
    fixed batch without them, a step on shared cores took 3-6x the loop's (README.md, "Time.")."""
    accum = cfg.train.grad_accum_steps
    micro = cfg.train.global_batch_size // accum
    with tempfile.TemporaryDirectory() as tmp:
        data = _latent_set(cfg, Path(tmp))
        order = EpochOrder(len(data), cfg.train.seed)
        if cfg.model.repa_dim:
            step.repa_targets = repa_targets(data, device)

        def batches(s: int) -> list:
            parts = [(a * micro, (a + 1) * micro) for a in range(accum)]
            return [global_batch(data, order, cfg, s, lo, hi) for lo, hi in parts]

        made = itertools.count()
        with Prefetch(batches, max(1, cfg.train.num_workers)) as prefetch:
            prefetch.take(-1, 1 + TIMED)  # queue the first batches: every one is made ahead

            def update() -> None:
                s = next(made)
                step(step.model, prefetch.take(s, 1 + TIMED))

            return time_fn(update, torch.device(device), warmup=1, iters=TIMED)


# dopri5 adapts its steps: counted as the 40 velocity evaluations per image it took for `sfd`
# (Δt = 0.3) at the final checkpoints of the composites grid (26-34 for synchronous rows, 69 on
# a learned path; docs/ABLATION.md, the sampling-steps axis)
ADAPTIVE_NFE = 40


def sample_nfe(method: str, num_steps: int) -> int:
    """Velocity evaluations per image of one solve (the solver registry's rule)."""
    nfe = SOLVERS[method].nfe(num_steps)
    return ADAPTIVE_NFE if nfe is None else nfe


def estimate_stages(plan, stages: tuple[str, ...], device: str = "cpu") -> dict[str, float]:
    """Seconds each of ``stages`` (names of :data:`sfd.experiments.ledger.STAGE_FILES`) should
    take on this machine for ``plan`` (:class:`sfd.experiments.run.RunPlan`)."""
    sizes, train_set, test_set = plan.sizes, plan.train_set, plan.test_set
    shape = first_image_shape(train_set)
    grid = shape[-1] // 2 ** (len(sizes.texture.block_out_channels) - 1)
    read = _read_seconds(train_set)
    encoder = EfficientNetLite0Encoder(grid=grid, stride=sizes.encoder_stride).to(device).eval()
    enc = _per_image(encoder.features, shape, device, n=sizes.batch_size)  # the stage's batch
    n_sem, n_train, n_test = min(sizes.semvae_images, len(train_set)), len(train_set), len(test_set)
    est = {
        "texture_vae": sizes.texture.total_steps
        * (_texture_step(plan, shape, device) + sizes.texture.batch_size * read)
        + n_test * read,
        "features": n_sem * (read + 2 * enc),  # both flips
        "features_val": n_test * (read + 2 * enc),
        "semvae": sizes.semvae_train.total_steps * _semvae_step(plan, encoder.dim, grid, device),
        "latents": n_train * (read + 2.5 * enc),  # both flips, and the texture VAE's encoder
    }
    if {"sfd", "samples"} & set(stages):
        train, forward, cfg = _sfd(plan, grid, encoder.dim, device)
        guided = 2 if max(cfg.sample.cfg_scale_tex, cfg.sample.cfg_scale_sem) > 1 else 1
        chunks = -(-plan.num_samples // max(1, min(plan.sample_batch, plan.num_samples)))
        est["sfd"] = cfg.train.total_steps * train
        solves = chunks * sample_nfe(cfg.sample.method, cfg.sample.num_steps) + STAGE_STEPS
        est["samples"] = solves * guided * forward
    pooled = _per_image(lambda x: encoder.pooled(x, size=POOL_SIZE), shape, device)
    n_metric = min(plan.probe_images, n_train) + 3 * min(plan.metric_images, n_test)
    est["metrics"] = n_metric * (read + pooled)
    for name, extra in FIXED_SECONDS.items():
        est[name] = est.get(name, 0.0) + extra
    return {name: round(est[name], 1) for name in stages if name in est}


def describe_estimate(est: dict[str, float], took: float | None = None) -> str:
    """The estimate as one block of lines for the log (``took``: seconds it took to make)."""
    rows = [f"  {name:<13} {_duration(s)}" for name, s in est.items()]
    total = _duration(sum(est.values()))
    timed = f"{TIMED} timed steps of each stage at this run's sizes"
    head = f"estimated time on this machine ({timed}{'' if took is None else f', {took:.0f} s'})"
    return "\n".join([head + ":", *rows, f"  {'total':<13} {total} (plus start-up)"])


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
