"""Crash campaign: SIGKILL long-running sfd commands at random moments, rerun them to
completion, and compare with an uninterrupted run (docs/RELIABILITY.md).

    python scripts/crash_campaign.py --kills 10 --commands train,sample --out /tmp/campaign

For each command: one uninterrupted reference run; then a victim run killed ``--kills`` times
(SIGKILL to its process group at a uniformly random moment within the reference's duration),
rerun after each kill, and finally run to completion. Checks: final model / EMA / optimizer
(train) or every PNG and samples.npz (sample) or every file the command writes (extract,
extract-features, the autoencoders; demo and ablate: every file but those recording wall-clock
times) bitwise equal to the reference; no temp files (``.tmp``) left; no lock left;
``log.jsonl`` without duplicated or missing steps. Commands: ``train``, ``sample``,
``train-semvae``, ``train-texture-vae``, ``extract``, ``extract-features`` (tiny settings on a
folder of 16 px images), ``demo`` and ``ablate`` (their ``--quick`` versions, on Fashion-MNIST);
``train-ddp``, ``sample-ddp``, ``extract-ddp``: ``torchrun`` with 2 processes, one rank killed
(``sfd.tools.crash_dist``).
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

from sfd.tools.crash_commands import (
    ablate_args,
    demo_args,
    extract_args,
    features_args,
    sample_args,
    semvae_args,
    setup,
    sfd_command,
    texture_args,
    train_args,
)
from sfd.tools.crash_compare import (
    compare_files,
    compare_sample,
    compare_train,
    compare_tree,
    leftovers,
)
from sfd.tools.crash_dist import campaign_dist


def _run(cmd, env, kill_after=None) -> tuple[int, float]:
    t0 = time.perf_counter()
    p = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        p.wait(timeout=kill_after)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        return -9, time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"{cmd[3]} failed: {p.stderr.read().decode()[-2000:]}")
    return 0, time.perf_counter() - t0


def _kill_until(cmd, env, got: Path, compare, kills: int, duration: float, rng) -> dict:
    """Kill runs until ``kills`` kills have landed. A chain is one output directory: killed,
    rerun, killed again ... until a rerun finishes before its kill moment (a resumed run has
    less left to do); then the chain is checked against the reference and a new one starts
    afresh. The last chain is run to completion and checked too."""
    landed, moments, chains, problems = 0, [], 0, []
    in_chain = 0

    def check() -> list[str]:
        return compare() + [f"left behind: {p}" for p in leftovers(got)]

    for _attempt in range(6 * kills):
        if landed >= kills:
            break
        moment = rng.uniform(0.1, 1.0) * duration
        code, _ = _run(cmd, env, kill_after=moment)
        if code == -9:
            landed, in_chain = landed + 1, in_chain + 1
            moments.append(round(moment, 2))
            continue
        if in_chain:  # the chain finished after its kills: check it, start another
            chains += 1
            problems += check()
        shutil.rmtree(got, ignore_errors=True)
        in_chain = 0
    _run(cmd, env)
    chains += 1
    problems += check()
    return {
        "kills": landed,
        "chains_checked": chains,
        "moments_s": moments,
        "bitwise_equal": not problems,
        "problems": problems,
    }


def campaign(root: Path, commands: list[str], kills: int, seed: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SFD_DEBUG": "0"}
    inputs = setup(root)
    rng = random.Random(seed)
    make = {
        "train": (lambda out: train_args(inputs["data"], out), compare_train),
        "sample": (
            lambda out: sample_args(inputs["trained"], inputs["decoder"], out),
            compare_sample,
        ),
        "train-semvae": (
            lambda out: semvae_args(inputs["features"], out),
            compare_files("semvae.safetensors", "semvae.json"),
        ),
        "train-texture-vae": (
            lambda out: texture_args(inputs["images"], out),
            compare_files("diffusion_pytorch_model.safetensors", "config.json"),
        ),
        "extract": (lambda out: extract_args(inputs["images"], root, out), compare_tree),
        "extract-features": (lambda out: features_args(inputs["images"], out), compare_tree),
        "demo": (demo_args, compare_tree),
        "ablate": (ablate_args, compare_tree),
    }
    results = {}
    for name in commands:
        args, compare = make[name]
        ref, got = root / f"{name}-ref", root / f"{name}-killed"
        for old in (ref, got):
            shutil.rmtree(old, ignore_errors=True)
        _, duration = _run(sfd_command(args(ref), env), env)
        cmd = sfd_command(args(got), env)
        res = _kill_until(cmd, env, got, lambda: compare(ref, got), kills, duration, rng)  # noqa: B023
        results[name] = {**res, "reference_s": round(duration, 1)}
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--commands", default="train,sample")
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    names = a.commands.split(",")
    res = campaign(a.out, [n for n in names if not n.endswith("-ddp")], a.kills, a.seed)
    if any(n.endswith("-ddp") for n in names):  # torchrun chains (crash_dist.py)
        dist = [n for n in names if n.endswith("-ddp")]
        res.update(campaign_dist(a.out, dist, a.kills, random.Random(a.seed)))
    print(json.dumps(res, indent=2))
    sys.exit(0 if all(r["bitwise_equal"] for r in res.values()) else 1)


if __name__ == "__main__":
    main()
