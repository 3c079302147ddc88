"""Parity and throughput of SFDPipeline against ``sfd sample`` on a trained run.

Usage (the numbers in docs/ECOSYSTEM.md):
    python scripts/ecosystem_parity.py RUN --decoder DECODER --num 200 --batch-size 50

Exports RUN for diffusers into a temporary directory, generates images [0, num) with the
GenerationJob behind ``sfd sample`` (its ``images``, written as ``sfd sample`` writes them)
and with the exported pipeline (``load_export``; the same seeds and balanced labels, PNGs saved by
PIL), compares the files byte for byte and prints
images/s of each (model loading excluded, PNG writing included in both; the two alternate
chunk by chunk, so a shared machine's load falls on both alike). Runs on CPU.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sfd.api import load_checkpoint
from sfd.data.images import write_png
from sfd.ecosystem import image_generators, load_export
from sfd.ecosystem.export import ExportSources, export_diffusers
from sfd.generate import GenerationJob, LatentSampler, balanced_labels
from sfd.latents.texture import load_texture_autoencoder


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("--decoder", type=Path, default=None)
    ap.add_argument("--num", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sfd-parity-"))
    export_diffusers(ExportSources(args.run, args.decoder), tmp / "export")

    model, ckpt = load_checkpoint(args.run)
    decoder = load_texture_autoencoder(args.decoder or ckpt.config.latent.texture_autoencoder)
    job = GenerationJob(
        LatentSampler(model, ckpt.config, ckpt.stats),
        decoder.eval(),
        tmp / "cli",
        args.num,
        args.batch_size,
        args.seed,
    )
    pipe = load_export(tmp / "export")
    labels = balanced_labels(range(args.num), ckpt.config.model.num_classes).tolist()
    (tmp / "pipe").mkdir()
    (tmp / "cli" / "images").mkdir(parents=True)
    t_cli = t_pipe = 0.0
    # interleaved chunk by chunk, so that a shared machine's load falls on both alike
    for lo in range(0, args.num, args.batch_size):
        hi = min(args.num, lo + args.batch_size)
        start = time.perf_counter()
        for i, img in zip(range(lo, hi), job.images(list(range(lo, hi))), strict=True):
            write_png(job.png_path(i), img)
        t_cli += time.perf_counter() - start
        start = time.perf_counter()
        gens = image_generators(args.seed, hi - lo, start=lo)
        for i, image in enumerate(pipe(labels[lo:hi], generator=gens).images, start=lo):
            image.save(tmp / "pipe" / f"{i:06d}.png")
        t_pipe += time.perf_counter() - start

    same = diff = 0
    max_abs = 0
    for i in range(args.num):
        a, b = job.png_path(i), tmp / "pipe" / f"{i:06d}.png"
        if a.read_bytes() == b.read_bytes():
            same += 1
        else:
            diff += 1
            pa, pb = (np.asarray(Image.open(p)).astype(int) for p in (a, b))
            max_abs = max(max_abs, int(np.abs(pa - pb).max()))
    s = ckpt.config.sample
    print(
        json.dumps(
            {
                "num": args.num,
                "sampler": f"{s.method} {s.num_steps} steps, CFG {s.cfg_scale_tex}",
                "byte_identical": same,
                "different": diff,
                "max_abs_diff_uint8": max_abs,
                "sfd_sample_images_per_s": round(args.num / t_cli, 1),
                "pipeline_images_per_s": round(args.num / t_pipe, 1),
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
            }
        )
    )


if __name__ == "__main__":
    main()
