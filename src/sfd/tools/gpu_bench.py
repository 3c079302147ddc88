"""The GPU check's measuring steps: ``sfd bench`` at XL and B, the largest XL batch, XL
sampling throughput (``scripts/gpu_check.sh``; docs/PERFORMANCE.md)."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import os
import time

import torch

from sfd.bench.throughput import run_bench
from sfd.config import apply_overrides, preset
from sfd.generate import LatentSampler
from sfd.latents.composite import LatentStats
from sfd.model import LightningDiT
from sfd.tools.gpu_record import Ctx, need_cuda


def _bench_config(ctx: Ctx, name: str, compile_on: bool):
    cuda = ctx.device == "cuda"
    overrides = [
        f"train.precision={'bf16' if cuda else 'fp32'}",  # bf16 on a CPU is emulated (slow)
        f"train.compile={str(compile_on).lower()}",
        f"train.fused_adamw={str(cuda).lower()}",
    ]
    return apply_overrides(preset("tiny" if ctx.dry_run else name), overrides), overrides


def bench(ctx: Ctx, partial: dict, name: str, compile_on: bool, batch_size: int = 64) -> dict:

    need_cuda(ctx)
    cfg, overrides = _bench_config(ctx, name, compile_on)
    batch = 4 if ctx.dry_run else batch_size
    iters, warmup = (1, 1) if ctx.dry_run else (10, 3)
    if ctx.device == "cuda":
        torch.set_float32_matmul_precision("high")  # TF32, as `sfd train` sets it
    partial["command"] = (
        f"sfd bench --preset {cfg.preset} --batch-size {batch} --device {ctx.device} "
        f"--iters {iters} --warmup {warmup} " + " ".join(f"--set {o}" for o in overrides)
    )
    t0 = time.perf_counter()
    result = run_bench(cfg, batch, ctx.device, warmup=warmup, iters=iters)
    return (
        partial
        | dataclasses.asdict(result)
        | {
            "wall_s": time.perf_counter() - t0,  # compilation included
            "compile": compile_on,
            "compile_disabled": compile_on and os.environ.get("TORCH_COMPILE_DISABLE") == "1",
        }
    )


def step_max_batch(ctx: Ctx, partial: dict, budget_s: float) -> dict:
    """Doubling search from 128 for the largest XL batch that trains (bf16, eager)."""

    need_cuda(ctx)
    cfg, overrides = _bench_config(ctx, "XL", False)
    sizes = [8, 16] if ctx.dry_run else [128 * 2**k for k in range(6)]
    tried = partial.setdefault("tried", [])
    partial["overrides"] = overrides
    t_start, last = time.perf_counter(), 0.0
    for batch in sizes:
        if time.perf_counter() - t_start + 2.5 * last > 0.8 * budget_s:
            partial["stopped"] = f"time cap: batch {batch} would not finish in the step's budget"
            break
        t0 = time.perf_counter()
        try:
            r = run_bench(cfg, batch, ctx.device, warmup=1, iters=3, sample_steps=2)
        except (torch.OutOfMemoryError, RuntimeError) as e:  # cuBLAS/SDPA report OOM as either
            if "out of memory" not in str(e).lower():
                raise
            tried.append({"batch_size": batch, "fits": False, "error": str(e).splitlines()[0]})
            partial["stopped"] = f"out of memory at batch {batch}"
            break
        finally:
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        last = time.perf_counter() - t0
        row = dataclasses.asdict(r)
        keep = ("train_img_per_s", "train_ms_per_step", "train_mfu", "peak_memory_gb")
        tried.append(
            {"batch_size": batch, "fits": True, "seconds": last} | {k: row[k] for k in keep}
        )
        partial["largest"] = row
    fits = [t["batch_size"] for t in tried if t["fits"]]
    if not fits:
        raise RuntimeError(f"no batch size fitted: {tried}")
    return partial | {"largest_batch": max(fits)}


def _perturb_zero_init(model) -> None:
    """A fresh DiT outputs exactly zero (adaLN-zero); give those layers small random weights so
    the adaptive solver sees a non-trivial velocity field (its NFE still is not a trained one's)."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.copy_(0.02 * torch.randn(p.shape, generator=gen))


def step_sample(ctx: Ctx, partial: dict, budget_s: float) -> dict:
    """XL sampling throughput through the generation path: Heun 32 steps + CFG, dopri5 + CFG."""
    need_cuda(ctx)
    cfg = preset("tiny" if ctx.dry_run else "XL")
    batch, steps = (4, 2) if ctx.dry_run else (64, 32)
    cuda = ctx.device == "cuda"
    torch.manual_seed(0)
    model = LightningDiT.from_configs(cfg.model, cfg.latent).to(ctx.device).eval()
    _perturb_zero_init(model)
    stats = LatentStats.identity(cfg.latent.channels)
    # (solver, precision, steps): bf16 first (the headline), then TF32 and what `sfd sample`
    # runs today (fp32: no autocast, no TF32) at fewer steps (compare image_forwards_per_s)
    few = max(1, steps // 4)
    variants = [("heun", "bf16", steps), ("heun", "tf32", few)]
    variants += [("heun", "fp32", few), ("dopri5", "bf16", None)]  # its NFE is unknown: last
    if not cuda:  # bf16 autocast on a CPU is emulated; TF32 does not exist there
        variants = [("heun", "fp32", steps), ("dopri5", "fp32", None)]
    runs = partial.setdefault("runs", [])
    partial |= {"preset": cfg.preset, "batch_size": batch, "cfg_scale": 1.5, "weights": "random"}
    partial["note"] = (
        "random weights, zero-init layers perturbed: dopri5's NFE is not a trained one's"
    )
    t_start = time.perf_counter()
    for method, precision, n in variants:
        if runs and time.perf_counter() - t_start > 0.6 * budget_s:
            partial.setdefault("not_run", []).append(f"{method} {precision}: time cap")
            continue
        sample = dataclasses.replace(cfg.sample, method=method, num_steps=n or steps)
        sample = dataclasses.replace(sample, compute_batch=batch, cfg_scale_tex=1.5)
        sample = dataclasses.replace(sample, cfg_scale_sem=1.5)
        with _precision(precision, ctx.device):
            run = _timed_sample(model, dataclasses.replace(cfg, sample=sample), stats, ctx, batch)
        runs.append(run | {"precision": precision})
    return partial


def _timed_sample(model, cfg, stats, ctx: Ctx, batch: int) -> dict:
    """One timed sampling of ``batch`` images after a one-step warm-up, under the caller's
    precision."""
    sampler = LatentSampler(model, cfg, stats, ctx.device)
    warm = dataclasses.replace(cfg.sample, method="heun", num_steps=1)
    dataclasses.replace(sampler, config=dataclasses.replace(cfg, sample=warm)).sample(range(batch))
    _sync(ctx.device)
    t0 = time.perf_counter()
    sol = sampler.sample(range(batch))
    _sync(ctx.device)
    sec = time.perf_counter() - t0
    forwards = 2 * sol.nfe  # CFG: a conditional and an unconditional branch per NFE
    return {
        "method": cfg.sample.method,
        "num_steps": None if cfg.sample.method == "dopri5" else cfg.sample.num_steps,
        "nfe": sol.nfe,
        "model_forwards_per_image": forwards,
        "seconds": sec,
        "img_per_s": batch / sec,
        "image_forwards_per_s": batch * forwards / sec,
        "finite": bool(torch.isfinite(sol.final).all()),
    }


@contextlib.contextmanager
def _precision(name: str, device: str):
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high" if name == "tf32" else "highest")
    try:
        with torch.autocast(device, dtype=torch.bfloat16, enabled=name == "bf16"):
            yield
    finally:
        torch.set_float32_matmul_precision(before)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()
