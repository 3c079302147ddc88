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
(scripts/crash_campaign_dist.py).
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
    extract_inputs(root)
    trained = root / "trained"
    if not (trained / "config.json").exists():
        subprocess.run(_sfd(train_args(data, trained, steps=2), {}), check=True,
                       capture_output=True)  # fmt: skip
    return {"data": data, "decoder": decoder, "trained": trained, "features": features,
            "images": images}  # fmt: skip


EXTRACT_COMMON = ["--dataset", "folder", "--image-size", 32, "--channels", 3,
                  "--encoder-stride", 8, "--shard-size", 4, "--batch-size", 3,
                  "--device", "cpu"]  # fmt: skip


def extract_inputs(root: Path) -> None:
    """A 3-level texture VAE (32 px -> 8 x 8) and an untrained SemVAE on the 8 x 8 grid of
    EfficientNet-Lite0's stride-8 features (40-d): what ``sfd extract`` needs."""
    from diffusers import AutoencoderKL

    from sfd.latents.semvae import SemanticVAE, SemVAEConfig, save_semvae

    vae, semvae = root / "extract-vae", root / "extract-semvae"
    if not (vae / "config.json").exists():
        torch.manual_seed(0)
        AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 3,
                      up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(8, 8, 8),
                      layers_per_block=1, latent_channels=4,
                      norm_num_groups=4).save_pretrained(vae)  # fmt: skip
    if not (semvae / "semvae.json").exists():
        torch.manual_seed(0)
        cfg = SemVAEConfig(in_dim=40, latent_channels=2, width=16, depth=1, num_heads=2, grid=8)
        save_semvae(SemanticVAE(cfg), semvae)


def extract_args(images, root, out):
    return ["extract", "--data-root", images, *EXTRACT_COMMON, "--out", out, "--texture-ae",
            root / "extract-vae", "--semvae", root / "extract-semvae"]  # fmt: skip


def features_args(images, out):
    return ["extract-features", "--data-root", images, *EXTRACT_COMMON, "--grid", 8,
            "--out", out]  # fmt: skip


def demo_args(out):
    return ["demo", "--quick", "--out", out, "--device", "cpu"]


def ablate_args(out):
    return ["ablate", "--quick", "--out", out, "--device", "cpu"]


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


TIMED_KEYS = ("seconds", "hardware", "img_per_s", "elapsed")  # differ between any two runs


def _untimed(value):
    """A JSON value without the keys that record wall-clock time or the host."""
    if isinstance(value, dict):
        return {k: _untimed(v) for k, v in value.items() if not any(t in k for t in TIMED_KEYS)}
    if isinstance(value, list):
        return [_untimed(v) for v in value]
    return value


def _safetensors(path: Path) -> tuple:
    """A safetensors file's content: its metadata and tensors. Not its bytes: the library writes
    the metadata in hash-map order, which differs from one process to the next."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return f.metadata(), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118


def _same(a, b) -> bool:
    if isinstance(a, tuple):
        return (
            a[0] == b[0]
            and a[1].keys() == b[1].keys()
            and all(torch.equal(a[1][k], b[1][k]) for k in a[1])
        )
    return a == b


# logs; the record of a run's data check (when, how fast, the shards' modification times)
SKIPPED = ("log.jsonl", "data_check.json")


def _tree(root: Path) -> dict:
    """Every file under ``root`` but logs, data-check records and TensorBoard events: path ->
    content. JSON files without wall-clock times and with the output directory's own path
    replaced by ``OUT``."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if not p.is_file() or "tb" in rel.parts or p.suffix == ".log" or p.name in SKIPPED:
            continue
        if p.suffix == ".json":
            out[str(rel)] = _untimed(json.loads(p.read_text().replace(str(root), "OUT")))
        elif p.suffix == ".safetensors":
            out[str(rel)] = _safetensors(p)
        else:
            out[str(rel)] = p.read_bytes()
    return out


def compare_tree(ref: Path, got: Path) -> list[str]:
    """Same files, byte for byte (times and logs aside); ``log.jsonl`` files: same steps."""
    from sfd.training.logs import read_log

    a, b = _tree(ref), _tree(got)
    problems = [f"{n} missing" for n in sorted(a.keys() - b.keys())]
    problems += [f"{n} extra" for n in sorted(b.keys() - a.keys())]
    problems += [f"{n} differs" for n in sorted(a.keys() & b.keys()) if not _same(a[n], b[n])]
    for log in sorted(ref.rglob("log.jsonl")):
        mine = got / log.relative_to(ref)
        want = [r["step"] for r in read_log(log.parent)]
        have = [r["step"] for r in read_log(mine.parent)] if mine.exists() else None
        if have != want:
            problems.append(f"{log.relative_to(ref)} steps {have} != {want}")
    return problems


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


def _kill_until(cmd, env, got: Path, compare, kills: int, duration: float, rng) -> dict:
    """Kill runs until ``kills`` kills have landed. A chain is one output directory: killed,
    rerun, killed again ... until a rerun finishes before its kill moment (a resumed run has
    less left to do); then the chain is checked against the reference and a new one starts
    afresh. The last chain is run to completion and checked too."""
    landed, moments, chains, problems = 0, [], 0, []
    in_chain = 0

    def check() -> list[str]:
        return compare() + [f"left behind: {p}" for p in _leftovers(got)]

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
    return {"kills": landed, "chains_checked": chains, "moments_s": moments,
            "bitwise_equal": not problems, "problems": problems}  # fmt: skip


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
        "extract": (lambda out: extract_args(inputs["images"], root, out), compare_tree),
        "extract-features": (lambda out: features_args(inputs["images"], out), compare_tree),
        "demo": (demo_args, compare_tree),
        "ablate": (ablate_args, compare_tree),
    }  # fmt: skip
    results = {}
    for name in commands:
        args, compare = make[name]
        ref, got = root / f"{name}-ref", root / f"{name}-killed"
        for old in (ref, got):
            shutil.rmtree(old, ignore_errors=True)
        _, duration = _run(_sfd(args(ref), env), env)
        cmd = _sfd(args(got), env)
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
    if any(n.endswith("-ddp") for n in names):  # torchrun chains (crash_campaign_dist.py)
        from crash_campaign_dist import campaign_dist

        dist = [n for n in names if n.endswith("-ddp")]
        res.update(campaign_dist(a.out, dist, a.kills, random.Random(a.seed)))
    print(json.dumps(res, indent=2))
    sys.exit(0 if all(r["bitwise_equal"] for r in res.values()) else 1)


if __name__ == "__main__":
    main()
