"""Crash campaign: SIGKILL long-running sfd commands at random moments, rerun them to
completion, and compare with an uninterrupted run (docs/RELIABILITY.md).

    python scripts/crash_campaign.py --kills 10 --commands train,sample --out /tmp/campaign

For each command: one uninterrupted reference run; then a victim run killed ``--kills`` times
(SIGKILL to its process group at a uniformly random moment within the reference's duration),
rerun after each kill, and finally run to completion. Checks: final model / EMA / optimizer
(train) or every PNG and samples.npz (sample) bitwise equal to the reference; no temp files
(``.tmp``) left; no lock left; ``log.jsonl`` without duplicated or missing steps. Covered today:
``train`` and ``sample``, on tiny settings; the other long-running commands are not yet in it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
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
    from helpers import tiny_config, write_synthetic_latents
    from sfd.latents.train_autoencoders import TextureVAETrainConfig, build_texture_vae

    data = root / "latents"
    if not (data / "meta.json").exists():
        write_synthetic_latents(data, tiny_config(), count=16, shard_size=8)
    decoder = root / "decoder"
    if not (decoder / "config.json").exists():
        torch.manual_seed(0)
        cfg = TextureVAETrainConfig(block_out_channels=(8,), latent_channels=4, norm_num_groups=4)
        build_texture_vae(3, cfg).save_pretrained(decoder)
    trained = root / "trained"
    if not (trained / "config.json").exists():
        subprocess.run(_sfd(train_args(data, trained, steps=2), {}), check=True,
                       capture_output=True)  # fmt: skip
    return {"data": data, "decoder": decoder, "trained": trained}


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
    }  # fmt: skip
    results = {}
    for name in commands:
        args, compare = make[name]
        ref, got = root / f"{name}-ref", root / f"{name}-killed"
        _, duration = _run(_sfd(args(ref), env), env)
        done, moments = 0, []
        for _ in range(kills):
            moment = rng.uniform(0.1, 1.0) * duration
            code, _ = _run(_sfd(args(got), env), env, kill_after=moment)
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
