"""Crash campaign: SIGKILL long-running sfd commands at random moments, rerun them to
completion, and compare with an uninterrupted run (docs/RELIABILITY.md).

    python scripts/crash_campaign.py --kills 10 --commands train,sample --out /tmp/campaign

For each command: one uninterrupted reference run; then a victim run killed ``--kills`` times
(SIGKILL to its process group at a uniformly random moment within the reference's duration),
rerun after each kill, and finally run to completion. Checks: final model / EMA / optimizer
(train) or every PNG and samples.npz (sample) bitwise equal to the reference; no temp files
(``.tmp``) left; no lock left; ``log.jsonl`` without duplicated or missing steps. Covered today:
``train``, ``sample``, ``train-semvae`` and ``train-texture-vae``, on tiny settings; ``extract``,
``extract-features``, ``demo`` and ``ablate`` are not yet in it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))


def _sfd(args: list, env: dict) -> list[str]:
    return [sys.executable, "-m", "sfd", *[str(a) for a in args]]


def setup(root: Path) -> dict:
    """A tiny latent set, a tiny texture decoder and the command lines of the campaign."""
    from helpers import tiny_config, write_feature_set, write_synthetic_latents
    from sfd.config import TextureVAETrainConfig
    from sfd.training.texture_vae import build_texture_vae

    data = root / "latents"
    if not (data / "meta.json").exists():
        write_synthetic_latents(data, tiny_config(), count=16, shard_size=8)
    decoder = root / "decoder"
    if not (decoder / "config.json").exists():
        torch.manual_seed(0)
        cfg = TextureVAETrainConfig(block_out_channels=(8,), latent_channels=4, norm_num_groups=4)
        build_texture_vae(3, cfg).save_pretrained(decoder)
    features = root / "features"
    if not (features / "meta.json").exists():
        write_feature_set(features, count=64, shard_size=16)
    images = root / "images"
    if not images.exists():
        import numpy as np
        from PIL import Image

        rng = np.random.default_rng(0)
        for c in "ab":
            (images / c).mkdir(parents=True)
            for i in range(12):
                arr = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
                Image.fromarray(arr).save(images / c / f"{i}.png")
    trained = root / "trained"
    if not (trained / "config.json").exists():
        subprocess.run(_sfd(train_args(data, trained, steps=2), {}), check=True,
                       capture_output=True)  # fmt: skip
    return {"data": data, "decoder": decoder, "trained": trained, "features": features,
            "images": images}  # fmt: skip


def semvae_args(features, out):
    return ["train-semvae", "--features", features, "--out", out, "--latent-channels", 2,
            "--width", 16, "--depth", 1, "--num-heads", 2, "--total-steps", 150,
            "--batch-size", 8, "--warmup-steps", 5, "--ckpt-every", 10]  # fmt: skip


def texture_args(images, out):
    return ["train-texture-vae", "--dataset", "folder", "--data-root", images, "--image-size",
            16, "--channels", 3, "--out", out, "--block-out-channels", "8", "--latent-channels",
            4, "--norm-num-groups", 4, "--batch-size", 6, "--total-steps", 60,
            "--warmup-steps", 5, "--ckpt-every", 5]  # fmt: skip


def compare_files(*names):
    def compare(ref: Path, got: Path) -> list[str]:
        def same(n):
            return (got / n).exists() and (got / n).read_bytes() == (ref / n).read_bytes()

        return [f"{n} differs or is missing" for n in names if not same(n)]

    return compare


def train_args(data, out, steps=40):
    return ["train", "--preset", "tiny", "--data", data, "--out", out, "--device", "cpu",
            "--set", f"train.total_steps={steps}", "--set", "train.global_batch_size=4",
            "--set", "train.ckpt_every=5", "--set", "train.log_every=1"]  # fmt: skip


def sample_args(trained, decoder, out):
    return ["sample", trained, "--out", out, "--num", 24, "--batch-size", 2, "--decoder",
            decoder, "--device", "cpu", "--set", "sample.method=euler",
            "--set", "sample.num_steps=4"]  # fmt: skip


def _run(cmd, env, kill_after=None) -> tuple[int, float]:
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         start_new_session=True)  # fmt: skip
    try:
        p.wait(timeout=kill_after)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        return -9, time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"{cmd[3]} failed: {p.stderr.read().decode()[-2000:]}")
    return 0, time.perf_counter() - t0


def _leftovers(root: Path) -> list[str]:
    return [str(p) for p in root.rglob("*") if ".tmp" in p.name or p.name == ".lock"]


def compare_train(ref: Path, got: Path) -> list[str]:
    from sfd.training.checkpoint import list_checkpoints
    from sfd.training.logs import read_log

    problems = []
    a, b = list_checkpoints(ref)[-1], list_checkpoints(got)[-1]
    if a.name != b.name:
        problems.append(f"final checkpoint {b.name} != {a.name}")
    for name in ("model", "ema", "optimizer"):
        x, y = load_file(str(a / f"{name}.safetensors")), load_file(str(b / f"{name}.safetensors"))
        if x.keys() != y.keys() or not all(torch.equal(x[k], y[k]) for k in x):
            problems.append(f"{name} weights differ")
    steps = [r["step"] for r in read_log(got)]
    want = [r["step"] for r in read_log(ref)]
    if steps != want:
        problems.append(f"log.jsonl steps {steps} != {want}")
    return problems


def compare_sample(ref: Path, got: Path) -> list[str]:
    problems = []
    names = sorted(p.name for p in (ref / "images").iterdir())
    if sorted(p.name for p in (got / "images").iterdir()) != names:
        problems.append("image files differ (lost, partial or extra)")
    for n in names:
        if (got / "images" / n).exists() and (got / "images" / n).read_bytes() != (
            ref / "images" / n
        ).read_bytes():
            problems.append(f"{n} differs")
    if (got / "samples.npz").read_bytes() != (ref / "samples.npz").read_bytes():
        problems.append("samples.npz differs")
    return problems


def campaign(root: Path, commands: list[str], kills: int, seed: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SFD_DEBUG": "0"}
    inputs = setup(root)
    rng = random.Random(seed)
    make = {
        "train": (lambda out: train_args(inputs["data"], out), compare_train),
        "sample": (lambda out: sample_args(inputs["trained"], inputs["decoder"], out),
                   compare_sample),
        "train-semvae": (lambda out: semvae_args(inputs["features"], out),
                         compare_files("semvae.safetensors", "semvae.json")),
        "train-texture-vae": (lambda out: texture_args(inputs["images"], out),
                              compare_files("diffusion_pytorch_model.safetensors",
                                            "config.json")),
    }  # fmt: skip
    results = {}
    for name in commands:
        args, compare = make[name]
        ref, got = root / f"{name}-ref", root / f"{name}-killed"
        for old in (ref, got):
            shutil.rmtree(old, ignore_errors=True)
        _, duration = _run(_sfd(args(ref), env), env)
        done, moments = 0, []
        for _ in range(kills):
            moment = rng.uniform(0.1, 1.0) * duration
            for _attempt in range(4):
                code, _ = _run(_sfd(args(got), env), env, kill_after=moment)
                if code == -9 or done > 0:
                    break
                # it finished before the kill (a faster moment of the host): start afresh earlier
                shutil.rmtree(got, ignore_errors=True)
                moment /= 2
            moments.append(round(moment, 2))
            done += code == -9
        _run(_sfd(args(got), env), env)
        problems = compare(ref, got) + [f"left behind: {p}" for p in _leftovers(got)]
        results[name] = {"kills": done, "moments_s": moments, "reference_s": round(duration, 1),
                         "bitwise_equal": not problems, "problems": problems}  # fmt: skip
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--commands", default="train,sample")
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    res = campaign(a.out, a.commands.split(","), a.kills, a.seed)
    print(json.dumps(res, indent=2))
    sys.exit(0 if all(r["bitwise_equal"] for r in res.values()) else 1)


if __name__ == "__main__":
    main()
