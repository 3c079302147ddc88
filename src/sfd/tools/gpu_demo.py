"""The GPU check's demo steps: the demo's data stages on the CPU while the GPU steps run, then
the demo with 10x the SFD steps on the GPU (``scripts/gpu_check.sh``; docs/PERFORMANCE.md)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import torch

from sfd.experiments.demo import DemoSettings, prepare_base, run_demo
from sfd.tools.gpu_record import REPO, Ctx, Skip, load, need_cuda

FMNIST_DIRS = ("/usr/share/datasets/fashion-mnist", str(REPO / ".whl" / "fashion-mnist"))


def find_fmnist() -> Path | None:
    for d in (os.environ.get("FMNIST_DIR"), *FMNIST_DIRS):
        if d and (Path(d) / "train-images-idx3-ubyte.gz").exists():
            return Path(d)
    return None


def demo_settings(ctx: Ctx):
    if ctx.dry_run:
        return DemoSettings(
            train_images=128,
            semvae_images=128,
            test_images=64,
            metric_images=32,
            probe_images=128,
            texture_steps=2,
            semvae_steps=2,
            sfd_steps=2,
            sfd_batch=8,
            batch_size=64,
            compile=False,
            overrides=("sample.method=euler", "sample.num_steps=2", "sample.compute_batch=10"),
        )
    return DemoSettings(sfd_steps=10 * DemoSettings().sfd_steps)  # 6000


def _fmnist_root() -> Path:
    root = find_fmnist()
    if root is None:
        where = ", ".join(d for d in (os.environ.get("FMNIST_DIR"), *FMNIST_DIRS) if d)
        raise Skip(f"no Fashion-MNIST IDX files in {where} (gpu_check.sh --prepare-carry)")
    return root


def step_demo_data(ctx: Ctx, partial: dict) -> dict:
    """The demo's data stages (texture VAE, features, SemVAE, latents) on the CPU, half its
    cores, while the GPU steps run; ``demo`` then finds them cached."""

    need_cuda(ctx)  # the full-size data stages run on a CPU, but only for the GPU-scale demo
    root = _fmnist_root()
    threads = max(1, (os.cpu_count() or 2) // 2)
    torch.set_num_threads(threads)
    out = ctx.work / "demo"
    partial |= {"out": str(out), "data_root": str(root), "device": "cpu", "threads": threads}
    base = prepare_base(out, demo_settings(ctx), root, "cpu")
    return partial | {
        "stage_seconds": {k: v["seconds"] for k, v in base.stages.done.items()},
        "texture_vae": base.texture,
        "semvae": base.semvae,
    }


def step_demo(ctx: Ctx, partial: dict) -> dict:
    """The embedded default with 10x the SFD steps (6000) on this device; its metrics."""
    need_cuda(ctx)
    root = _fmnist_root()
    settings = demo_settings(ctx)
    out = ctx.work / "demo"
    partial |= {"out": str(out), "data_root": str(root), "sfd_steps": settings.sfd_steps}
    t0 = time.time()  # the data stages, if another process is running them: wait for them
    while load(ctx.json_path)["steps"].get("demo_data", {}).get("status") == "running":
        time.sleep(1)
    partial["waited_for_demo_data_s"] = round(time.time() - t0, 1)
    metrics = run_demo(out, settings, root, ctx.device)
    if (out / "samples.png").exists():
        shutil.copy(out / "samples.png", ctx.out / "demo_samples.png")
    return partial | metrics
