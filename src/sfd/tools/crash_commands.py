"""The crash campaign's inputs and command lines: a tiny latent set, texture decoder, feature
set, image folder and trained run, and the ``sfd`` arguments of each command it kills
(``scripts/crash_campaign.py``; docs/RELIABILITY.md)."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sfd.config import TextureVAETrainConfig, preset
from sfd.latents.semvae import SemanticVAE, SemVAEConfig, save_semvae
from sfd.tools.synthetic import tiny_autoencoder, write_feature_set, write_synthetic_latents
from sfd.training.texture_vae import build_texture_vae


def sfd_command(args: list, env: dict) -> list[str]:
    return [sys.executable, "-m", "sfd", *[str(a) for a in args]]


def setup(root: Path) -> dict:
    """A tiny latent set, a tiny texture decoder and the command lines of the campaign."""
    data = root / "latents"
    if not (data / "meta.json").exists():
        write_synthetic_latents(data, preset("tiny"), count=16, shard_size=8)
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
        rng = np.random.default_rng(0)
        for c in "ab":
            (images / c).mkdir(parents=True)
            for i in range(12):
                arr = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
                Image.fromarray(arr).save(images / c / f"{i}.png")
    extract_inputs(root)
    trained = root / "trained"
    if not (trained / "config.json").exists():
        subprocess.run(
            sfd_command(train_args(data, trained, steps=2), {}), check=True, capture_output=True
        )
    return {
        "data": data,
        "decoder": decoder,
        "trained": trained,
        "features": features,
        "images": images,
    }


# fixed options as a command line each; paths are passed as separate items
EXTRACT_COMMON = shlex.split(
    "--dataset folder --image-size 32 --channels 3 --encoder-stride 8 --shard-size 4 "
    "--batch-size 3 --device cpu"
)


def extract_inputs(root: Path) -> None:
    """A 3-level texture VAE (32 px -> 8 x 8), an untrained SemVAE on the 8 x 8 grid of
    EfficientNet-Lite0's stride-8 features (40-d) and a 40-d feature set to fit the default
    storage's PCA of the REPA targets on: what ``sfd extract`` needs."""

    vae, semvae = root / "extract-vae", root / "extract-semvae"
    if not (root / "extract-features" / "meta.json").exists():
        write_feature_set(root / "extract-features", dim=40, grid=8)
    if not (vae / "config.json").exists():
        tiny_autoencoder().save_pretrained(vae)
    if not (semvae / "semvae.json").exists():
        torch.manual_seed(0)
        cfg = SemVAEConfig(in_dim=40, latent_channels=2, width=16, depth=1, num_heads=2, grid=8)
        save_semvae(SemanticVAE(cfg), semvae)


def extract_args(images, root, out):
    paths = ["--texture-ae", root / "extract-vae", "--semvae", root / "extract-semvae"]
    paths += ["--repa-pca", root / "extract-features"]  # the default storage's PCA
    return ["extract", "--data-root", images, *EXTRACT_COMMON, "--out", out, *paths]


def features_args(images, out):
    return ["extract-features", "--data-root", images, *EXTRACT_COMMON, "--grid", 8, "--out", out]


def demo_args(out):
    return ["demo", "--quick", "--out", out, "--device", "cpu"]


def ablate_args(out):
    return ["ablate", "--quick", "--out", out, "--device", "cpu"]


def semvae_args(features, out):
    options = shlex.split(
        "--latent-channels 2 --width 16 --depth 1 --num-heads 2 --total-steps 150 "
        "--batch-size 8 --warmup-steps 5 --ckpt-every 10"
    )
    return ["train-semvae", "--features", features, "--out", out, *options]


def texture_args(images, out):
    options = shlex.split(
        "--dataset folder --image-size 16 --channels 3 --block-out-channels 8 "
        "--latent-channels 4 --norm-num-groups 4 --batch-size 6 --total-steps 60 "
        "--warmup-steps 5 --ckpt-every 5"
    )
    return ["train-texture-vae", "--data-root", images, "--out", out, *options]


def train_args(data, out, steps=40):
    options = shlex.split(
        f"--preset tiny --device cpu --set train.total_steps={steps} "
        "--set train.global_batch_size=4 --set train.ckpt_every=5 --set train.log_every=1"
    )
    return ["train", "--data", data, "--out", out, *options]


def sample_args(trained, decoder, out):
    options = shlex.split("--num 24 --batch-size 2 --device cpu --set sample.method=euler")
    options += shlex.split("--set sample.num_steps=4")
    return ["sample", trained, "--out", out, "--decoder", decoder, *options]
