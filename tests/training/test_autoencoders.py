"""Training loops: the lr schedule, streamed feature shards, a short SemVAE and texture-VAE run."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from sfd.cli.autoencoders import train_semvae_command
from sfd.config import SemVAETrainConfig, TextureVAETrainConfig
from sfd.data.feature_shards import FeatureShards
from sfd.errors import EXIT_BAD_INPUT
from sfd.latents.semvae import SemVAEConfig, load_semvae
from sfd.latents.texture import load_texture_autoencoder
from sfd.training.lr_schedule import lr_at
from sfd.training.semvae_fit import semvae_lr, train_semvae
from sfd.training.texture_vae import train_texture_vae
from tests.helpers import write_feature_set

pytestmark = pytest.mark.usefixtures("one_thread")


def test_lr_schedule():
    kw = dict(total_steps=100, lr=1.0, warmup_steps=10, decay_fraction=0.2)
    assert lr_at(0, **kw) == pytest.approx(0.1) and lr_at(9, **kw) == 1.0
    assert lr_at(50, **kw) == 1.0 and lr_at(80, **kw) == 1.0
    assert lr_at(90, **kw) == pytest.approx(0.5)
    assert lr_at(99, **kw) < 0.01
    decay = [lr_at(s, **kw) for s in range(80, 100)]
    assert all(a >= b for a, b in zip(decay, decay[1:], strict=False))


def test_semvae_lr_schedule_defaults_are_the_releases():
    """docs/METHOD.md §2.2: lr 5e-5, 1M iterations, warm-up 500, cosine over the last 20%; the
    release's setup_scheduler (tokenizer/semvae/train.py): LinearLR(start_factor=0.01) and
    CosineAnnealingLR(eta_min=base_lr * 0.1)."""
    cfg = SemVAETrainConfig()
    assert (cfg.lr, cfg.total_steps, cfg.warmup_steps, cfg.decay_fraction) == (
        5e-5,
        1_000_000,
        500,
        0.2,
    )
    assert cfg.warmup_start_factor == 0.01 and cfg.min_lr_factor == 0.1
    assert semvae_lr(0, cfg) == pytest.approx(0.01 * 5e-5, rel=1e-12)
    assert semvae_lr(250, cfg) == pytest.approx((0.01 + 0.99 * 250 / 500) * 5e-5, rel=1e-12)
    assert semvae_lr(500, cfg) == 5e-5 and semvae_lr(799_999, cfg) == 5e-5
    decay = 200_000  # steps 800,000 ... 999,999; the floor is reached at step 1,000,000
    last = 0.1 * 5e-5 + 0.9 * 5e-5 * 0.5 * (1 + math.cos(math.pi * (decay - 1) / decay))
    assert semvae_lr(999_999, cfg) == pytest.approx(last, rel=1e-12)
    # The options switch the schedule: from lr at once, and a decay to 0.
    plain = replace(cfg, warmup_start_factor=1.0, min_lr_factor=0.0)
    assert semvae_lr(0, plain) == 5e-5
    to_zero = 5e-5 * 0.5 * (1 + math.cos(math.pi * (decay - 1) / decay))
    assert semvae_lr(999_999, plain) == pytest.approx(to_zero, rel=1e-9)
    assert semvae_lr(999_999, plain) < semvae_lr(999_999, cfg) / 1e6
    with pytest.raises(ValueError, match="warmup_start_factor"):
        SemVAETrainConfig(warmup_start_factor=0.0)
    with pytest.raises(ValueError, match="min_lr_factor"):
        SemVAETrainConfig(min_lr_factor=1.5)


def test_semvae_lr_schedule_matches_the_releases_torch_schedulers():
    """The release's three-phase SequentialLR, built from torch's schedulers as its
    setup_scheduler does (warm-up 10, constant 70, cosine 20 of 100 steps), step by step."""
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=2.0)
    warmup, constant, total = 10, 70, 100
    sched = torch.optim.lr_scheduler.SequentialLR(
        opt,
        schedulers=[
            torch.optim.lr_scheduler.LinearLR(opt, 0.01, 1.0, total_iters=warmup),
            torch.optim.lr_scheduler.ConstantLR(opt, factor=1.0, total_iters=constant),
            torch.optim.lr_scheduler.CosineAnnealingLR(
                opt, T_max=total - warmup - constant, eta_min=2.0 * 0.1
            ),
        ],
        milestones=[warmup, warmup + constant],
    )
    release = []
    for _ in range(total):
        release.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    cfg = SemVAETrainConfig(total_steps=total, lr=2.0, warmup_steps=warmup, decay_fraction=0.2)
    ours = [semvae_lr(step, cfg) for step in range(total)]
    assert ours == pytest.approx(release, rel=1e-9, abs=1e-12)


def test_feature_shards_stream_every_row_and_view_once_per_epoch(tmp_path):
    views = write_feature_set(tmp_path, count=10, shard_size=4)
    data = FeatureShards(tmp_path)
    assert (data.dim, data.grid) == (12, 4) and len(data.shards) == 3
    batches = data.batches(3, torch.Generator().manual_seed(0))
    seen = torch.cat([next(batches) for _ in range(8)])  # 20 items: 4 + 4 + 2 rows x 2 views
    assert seen.shape == (20, 12, 4, 4)
    expected = views.half().float().reshape(20, -1)
    assert sorted(map(tuple, seen.reshape(20, -1).tolist())) == sorted(
        map(tuple, expected.tolist())
    )
    ordered = torch.cat(list(data.ordered(7)))
    assert torch.equal(ordered, views.half().float().reshape(20, 12, 4, 4))
    train, held = data.split(0.3)  # the last 3 of 10 images: shard 1 (rows 4..7) is cut
    assert (train.count, held.count) == (7, 3)
    both = torch.cat([*train.ordered(5), *held.ordered(5)])
    assert torch.equal(both, ordered)
    assert data.split(0) == (data, None)
    with pytest.raises(ValueError, match="cannot hold out a fraction 1"):
        data.split(1)


def test_a_one_shard_feature_set_trains_with_or_without_a_hold_out(tmp_path, caplog):
    """hold-out by images, not shards; none at all works too."""
    write_feature_set(tmp_path / "features", count=12, shard_size=100)
    model = SemVAEConfig(latent_channels=2, width=16, depth=1, num_heads=2)
    config = SemVAETrainConfig(total_steps=2, batch_size=4, warmup_steps=5)
    with caplog.at_level("WARNING"):
        metrics = train_semvae(tmp_path / "features", tmp_path / "a", model, config)
    assert set(metrics) == {"cos", "mse"}
    assert "warm-up (5 steps) >= total steps (2)" in caplog.text
    none = replace(config, holdout_fraction=0.0)
    metrics = train_semvae(tmp_path / "features", tmp_path / "b", model, none)
    assert metrics["held_out"] is False and math.isfinite(metrics["cos"])


def test_short_semvae_run_learns_and_saves(tmp_path):
    write_feature_set(tmp_path / "features", count=48)
    model = SemVAEConfig(latent_channels=3, width=32, depth=1, num_heads=2)
    config = SemVAETrainConfig(total_steps=60, batch_size=8, lr=3e-3, warmup_steps=5, log_every=10)
    metrics = train_semvae(tmp_path / "features", tmp_path / "semvae", model, config)
    info = json.loads((tmp_path / "semvae" / "semvae.json").read_text())
    losses = [row["loss"] for row in info["history"]]
    assert losses[-1] < 0.5 * losses[0]
    assert set(metrics) == {"cos", "mse"} and 0.5 < metrics["cos"] <= 1.0
    assert info["held_out"] == metrics and info["config"]["in_dim"] == 12
    loaded = load_semvae(tmp_path / "semvae")
    assert loaded.config.in_dim == 12 and loaded.config.grid == 4
    # it remembers the encoder its features came from (what `sfd extract` checks)
    features_meta = json.loads((tmp_path / "features" / "meta.json").read_text())
    assert loaded.trained_on == features_meta["extraction"]["encoder"]


def test_train_semvae_command(tmp_path):
    write_feature_set(tmp_path / "features", count=20, shard_size=10)
    result = CliRunner().invoke(
        train_semvae_command,
        [
            "--features",
            str(tmp_path / "features"),
            "--out",
            str(tmp_path / "semvae"),
            "--latent-channels",
            "2",
            "--width",
            "16",
            "--depth",
            "1",
            "--num-heads",
            "2",
            "--total-steps",
            "3",
            "--batch-size",
            "4",
            "--warmup-steps",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "held-out cos" in result.output
    assert load_semvae(tmp_path / "semvae").config.latent_channels == 2


class Ramps(torch.utils.data.Dataset):
    """Eight 1-channel 16 x 16 images: vertical ramps of different slopes and offsets."""

    def __len__(self):
        return 8

    def __getitem__(self, i):
        rows = torch.linspace(-1, 1, 16).view(16, 1).expand(16, 16)
        return (0.5 * rows * (i % 4 - 1.5) + 0.2 * (i // 4) - 0.1).unsqueeze(0), i % 2


def test_short_texture_vae_run_learns_and_loads(tmp_path):
    config = TextureVAETrainConfig(
        block_out_channels=(8, 8, 16),
        latent_channels=2,
        norm_num_groups=4,
        total_steps=40,
        batch_size=4,
        lr=3e-3,
        warmup_steps=2,
        log_every=5,
    )
    metrics = train_texture_vae(Ramps(), tmp_path, config, test_dataset=Ramps())
    info = json.loads((tmp_path / "train_info.json").read_text())
    losses = [row["loss"] for row in info["history"]]
    assert losses[-1] < 0.6 * losses[0]
    ae = load_texture_autoencoder(tmp_path)
    assert (ae.channels, ae.downsample, ae.image_channels) == (2, 4, 1)
    mean, _ = ae.encode(Ramps()[0][0][None])
    assert mean.shape == (1, 2, 4, 4)
    assert metrics["test_psnr"] > 10
    # the image size is recorded (diffusers' default would say 32)
    assert json.loads((tmp_path / "config.json").read_text())["sample_size"] == 16


def test_texture_vae_command_reports_a_held_out_psnr_for_a_folder(tmp_path, caplog):
    from PIL import Image

    from sfd.cli import main

    train_texture_vae_command = main.commands["train-texture-vae"]

    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (tmp_path / "img" / c).mkdir(parents=True)
        for i in range(5):
            pixels = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "img" / c / f"{i}.png")
    (tmp_path / "img" / "a" / "bad.png").write_text("not an image")
    args = ["--dataset", "folder", "--data-root", str(tmp_path / "img"), "--channels", "3"]
    args += ["--image-size", "16", "--out", str(tmp_path / "vae"), "--total-steps", "3"]
    args += ["--batch-size", "4", "--block-out-channels", "8,8", "--norm-num-groups", "4"]
    result = CliRunner().invoke(train_texture_vae_command, args)
    assert result.exit_code == EXIT_BAD_INPUT and "--on-error skip" in result.output
    caplog.clear()
    with caplog.at_level("WARNING"):
        result = CliRunner().invoke(train_texture_vae_command, [*args, "--on-error", "skip"])
    assert result.exit_code == 0, result.output
    assert "test_psnr" in json.loads(result.stdout.split(" -> ")[0])  # (stderr: the progress bar)
    # 3 steps of batch 4 over 10 images: epochs repeat, the unreadable file is reported once
    assert sum("bad.png" in r.getMessage() for r in caplog.records) == 1
    assert "warm-up (100 steps) >= total steps (3)" in caplog.text
