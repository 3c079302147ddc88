"""Extraction: latent and feature shards that training reads, resumable shard by shard."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from sfd.data.feature_shards import FeatureShards
from sfd.data.latent_shards import LatentDataset
from sfd.data.shards import shard_name
from sfd.extract import extract, extract_features
from sfd.latents.semvae import SemanticVAE, SemVAEConfig
from sfd.latents.texture import KLAutoencoder
from sfd.tools.synthetic import tiny_autoencoder
from tests.helpers import TINY_DINOV2

N_IMAGES, SHARD, DIM = 10, 4, 6


pytestmark = pytest.mark.usefixtures("one_thread")


class Images(torch.utils.data.Dataset):
    """Random 1-channel 16 x 16 images; ``bad`` indices behave like skipped files (None)."""

    num_classes = 3

    def __init__(self, bad=()):
        g = torch.Generator().manual_seed(0)
        self.images = torch.rand(N_IMAGES, 1, 16, 16, generator=g) * 2 - 1
        self.bad = set(bad)

    def __len__(self):
        return N_IMAGES

    def __getitem__(self, i):
        return None if i in self.bad else (self.images[i], i % 3)


class PoolEncoder(torch.nn.Module):
    """A FeatureEncoder stand-in: 2x2 average pooling and a fixed 1x1 projection to 6-d."""

    name, dim, grid = "pool", DIM, 8

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Conv2d(3, DIM, 1)
        self.calls = 0

    def describe(self):
        return {"name": self.name, "dim": self.dim, "grid": self.grid}

    def features(self, images):
        self.calls += 1
        return self.proj(torch.nn.functional.avg_pool2d(images.expand(-1, 3, -1, -1), 2))


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    vae = tiny_autoencoder(1, widths=(8, 8))
    semvae = SemanticVAE(
        SemVAEConfig(in_dim=DIM, latent_channels=2, width=16, depth=1, num_heads=2, grid=8)
    ).eval()
    return PoolEncoder().eval(), KLAutoencoder(vae), semvae


def _mtimes(directory):
    return {p.name: p.stat().st_mtime_ns for p in directory.glob("shard-*")}


def test_latent_shards_read_back_with_the_right_content(tmp_path, models):
    encoder, tex, semvae = models
    data = Images()
    meta = extract(
        data,
        encoder,
        tex,
        semvae,
        tmp_path,
        shard_size=SHARD,
        batch_size=3,
        settings={"texture_ae_path": "tiny"},
    )
    assert len(meta["shards"]) == 3 and [s["count"] for s in meta["shards"]] == [4, 4, 2]
    latents = LatentDataset(tmp_path)
    assert len(latents) == N_IMAGES and latents.num_classes == 3 and latents.has_repa
    assert (latents.meta["tex_channels"], latents.meta["sem_channels"]) == (4, 2)
    assert latents.meta["size"] == 8 and latents.meta["repa_dim"] == DIM
    extraction = latents.meta["extraction"]
    assert extraction["encoder"]["name"] == "pool" and extraction["texture_ae_path"] == "tiny"
    assert extraction["image_shape"] == [1, 16, 16] and extraction["semvae"]["in_dim"] == DIM
    index = np.array([5, 9])
    for view in (0, 1):
        batch = latents.gather(index, np.array([view, view]))
        images = data.images[index]
        images = images.flip(-1) if view else images
        with torch.no_grad():
            tex_mean, tex_std = tex.encode(images)
            features = encoder.features(images)
            sem_mean, sem_std = semvae.posterior(features)
        assert batch["label"].tolist() == [2, 0]
        assert torch.allclose(batch["tex_mean"], tex_mean, atol=1e-5)
        assert torch.allclose(batch["tex_std"], tex_std, atol=1e-5)
        assert torch.allclose(batch["sem_mean"], sem_mean, atol=1e-5)
        assert torch.allclose(batch["sem_std"], sem_std, atol=1e-5)
        assert batch["repa"].dtype == torch.float16
        assert torch.allclose(batch["repa"].float(), features, atol=1e-2)


def test_rerun_skips_finished_shards_and_rewrites_broken_ones(tmp_path, models):
    encoder, tex, semvae = models
    extract(Images(), encoder, tex, semvae, tmp_path, shard_size=SHARD, batch_size=4)
    before, stats = _mtimes(tmp_path), json.loads((tmp_path / "meta.json").read_text())["stats"]
    calls = encoder.calls
    extract(Images(), encoder, tex, semvae, tmp_path, shard_size=SHARD, batch_size=4)
    assert _mtimes(tmp_path) == before and encoder.calls == calls  # nothing recomputed
    shard1 = tmp_path / shard_name(1)
    raw = bytearray(shard1.read_bytes())
    raw[-5] ^= 0xFF  # same size, different bytes: only the hash notices
    shard1.write_bytes(bytes(raw))
    (tmp_path / shard_name(2)).unlink()
    extract(Images(), encoder, tex, semvae, tmp_path, shard_size=SHARD, batch_size=4)
    after = _mtimes(tmp_path)
    assert after[shard_name(0)] == before[shard_name(0)]
    assert after[shard_name(1)] != before[shard_name(1)]
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["stats"] == stats and len(LatentDataset(tmp_path)) == N_IMAGES
    with pytest.raises(ValueError, match=r"other settings \(repa, shard_size\)"):
        extract(Images(), encoder, tex, semvae, tmp_path, shard_size=5, repa=False)


def test_skipped_images_leave_their_shard_shorter(tmp_path, models):
    encoder, tex, semvae = models
    meta = extract(
        Images(bad={5}), encoder, tex, semvae, tmp_path, shard_size=SHARD, batch_size=4, repa=False
    )
    assert meta["count"] == N_IMAGES - 1 and meta["extraction"]["dataset_size"] == N_IMAGES
    latents = LatentDataset(tmp_path)
    assert not latents.has_repa and latents.gather(np.arange(9), np.zeros(9))["label"].tolist() == [
        0,
        1,
        2,
        0,
        1,
        0,
        1,
        2,
        0,
    ]


def test_incompatible_models_are_named(tmp_path, models):
    encoder, tex, _ = models
    semvae = SemanticVAE(SemVAEConfig(in_dim=5, latent_channels=2, width=16, depth=1, num_heads=2))
    with pytest.raises(ValueError, match="expects 5-d features"):
        extract(Images(), encoder, tex, semvae, tmp_path)


def test_a_semvae_of_another_grid_is_refused_naming_both_grids(tmp_path, models):
    """an 8x8-trained SemVAE must not silently encode a 16x16 grid."""
    encoder, tex, _ = models  # 16 px images, f2 texture AE: an 8x8 latent grid
    semvae = SemanticVAE(
        SemVAEConfig(in_dim=DIM, latent_channels=2, width=16, depth=1, num_heads=2, grid=4)
    ).eval()
    with pytest.raises(ValueError, match=r"trained on a 4x4 feature grid.* 8x8 grid"):
        extract(Images(), encoder, tex, semvae, tmp_path / "latents")
    assert not (tmp_path / "latents").exists()


def test_a_semvae_of_another_encoder_setting_is_refused_naming_both(tmp_path, models):
    encoder, tex, semvae = models
    semvae.trained_on = {**encoder.describe(), "stride": 16}
    try:
        with pytest.raises(ValueError, match="stride: SemVAE 16, now None"):
            extract(Images(), encoder, tex, semvae, tmp_path / "latents")
        semvae.trained_on = {**encoder.describe(), "grid": 4, "path": "/elsewhere"}
        meta = extract(Images(), encoder, tex, semvae, tmp_path / "ok", shard_size=SHARD)
    finally:
        semvae.trained_on = None
    # the latent set records both the encoder used and the one the SemVAE was trained on
    assert meta["extraction"]["semvae_encoder"]["path"] == "/elsewhere"
    assert meta["extraction"]["encoder"] == encoder.describe()
    assert meta["extraction"]["semvae"]["grid"] == meta["size"] == 8


def test_feature_shards_and_their_resumption(tmp_path, models):
    encoder = models[0]
    data = Images()
    meta = extract_features(data, encoder, tmp_path, shard_size=SHARD, batch_size=3)
    assert (meta["count"], meta["views"], meta["dim"], meta["grid"]) == (10, 2, DIM, 8)
    features = FeatureShards(tmp_path)
    stored = torch.cat(list(features.ordered(100)))  # (N * 2, C, h, w): image, flip, ...
    with torch.no_grad():
        expected = encoder.features(data.images[:1].flip(-1))
    assert torch.allclose(stored[1:2], expected, atol=1e-2)
    before = _mtimes(tmp_path)
    extract_features(data, encoder, tmp_path, shard_size=SHARD, batch_size=3)
    assert _mtimes(tmp_path) == before
    resized = extract_features(data, encoder, tmp_path / "g4", shard_size=SHARD, grid=4)
    assert resized["grid"] == 4


def _rank_worker(rank: int, port: int, out: str, world: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        encoder = PoolEncoderSeeded()
        meta = extract_features(Images(), encoder, out, shard_size=SHARD, batch_size=4)
        record = {"calls": encoder.calls, "has_meta": meta is not None}
        (Path(out) / f"rank{rank}.json").write_text(json.dumps(record))
    finally:
        torch.distributed.destroy_process_group()


class PoolEncoderSeeded(PoolEncoder):
    def __init__(self):
        torch.manual_seed(0)
        super().__init__()


def test_two_ranks_split_shards_and_rank_0_finalises(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(
        _rank_worker, args=(port, str(tmp_path / "two"), 2), nprocs=2, start_method="fork"
    )
    single = extract_features(Images(), PoolEncoderSeeded(), tmp_path / "one", shard_size=SHARD)
    two = json.loads((tmp_path / "two" / "meta.json").read_text())
    ranks = [json.loads((tmp_path / "two" / f"rank{r}.json").read_text()) for r in (0, 1)]
    # Rank 0 encodes shards 0 and 2 (4 + 2 images, batch 4), rank 1 shard 1; rank 0 finalises.
    assert ranks == [{"calls": 2, "has_meta": True}, {"calls": 1, "has_meta": False}]
    assert [s["sha256"] for s in two["shards"]] == [s["sha256"] for s in single["shards"]]


def test_commands_run_the_default_pipeline_on_an_image_folder(tmp_path):
    from click.testing import CliRunner
    from PIL import Image

    from sfd.cli.data import extract_command, extract_features_command
    from sfd.latents.semvae import save_semvae

    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (tmp_path / "images" / cls).mkdir(parents=True)
        for i in range(3):
            pixels = rng.integers(0, 256, (40, 36), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "images" / cls / f"{i}.png")
    tiny_autoencoder(1).save_pretrained(tmp_path / "vae")  # f4: 32 px -> 8 x 8
    common = [
        "--dataset",
        "folder",
        "--data-root",
        str(tmp_path / "images"),
        "--image-size",
        "32",
        "--encoder-stride",
        "8",
        "--shard-size",
        "4",
        "--batch-size",
        "3",
    ]
    runner = CliRunner()
    result = runner.invoke(
        extract_features_command, [*common, "--grid", "8", "--out", str(tmp_path / "features")]
    )
    assert result.exit_code == 0, result.output
    features = FeatureShards(tmp_path / "features")
    assert (features.dim, features.grid, features.meta["count"]) == (40, 8, 6)
    save_semvae(
        SemanticVAE(
            SemVAEConfig(in_dim=40, latent_channels=2, width=16, depth=1, num_heads=2, grid=8)
        ),
        tmp_path / "semvae",
    )
    result = runner.invoke(
        extract_command,
        [
            *common,
            "--out",
            str(tmp_path / "latents"),
            "--texture-ae",
            str(tmp_path / "vae"),
            "--semvae",
            str(tmp_path / "semvae"),
            "--store",
            "f32",
        ],
    )
    assert result.exit_code == 0, result.output
    latents = LatentDataset(tmp_path / "latents")
    assert latents.storage.legacy and latents.meta["version"] == 1
    assert len(latents) == 6 and latents.num_classes == 2 and latents.meta["repa_dim"] == 40
    assert latents.meta["extraction"]["texture_ae_path"] == str(tmp_path / "vae")
    assert latents.meta["class_names"] == ["a", "b"]  # the class folders, for runs and exports
    assert latents.meta["extraction"]["encoder"]["input_size"] == 64
    # the same images stored small: fp16 posteriors, an 8-component PCA fitted on the feature
    # set, view 0's targets only
    store = ["--store", "f16-pca8-flip", "--repa-pca", str(tmp_path / "features")]
    models = ["--texture-ae", str(tmp_path / "vae"), "--semvae", str(tmp_path / "semvae")]
    small = tmp_path / "small"
    result = runner.invoke(extract_command, [*common, "--out", str(small), *models, *store])
    assert result.exit_code == 0, result.output
    coded = LatentDataset(small)
    assert coded.storage.spec == "f16-pca8-flip" and coded.meta["repa_dim"] == 40
    assert coded.meta["extraction"]["storage"]["pca_components"] == 8
    index, view = np.arange(6), np.array([0, 1] * 3)
    a, b = latents.gather(index, view), coded.gather(index, view)
    assert torch.allclose(a["tex_mean"], b["tex_mean"], rtol=2**-10, atol=1e-6)
    assert b["repa"].shape == (6, 8, 8, 8) and b["repa"].dtype == torch.float16


def test_extract_dry_run_prints_bytes_per_image_of_each_option():
    from click.testing import CliRunner

    from sfd.cli import main

    args = ["extract", "--data-root", ".", "--out", "x", "--texture-ae", "t", "--semvae", "s"]
    result = CliRunner().invoke(main, [*args, "--store", "f16-semvae", "--dry-run"])
    assert result.exit_code == 0, result.output
    sizes = json.loads(result.output)["bytes_per_image"]
    assert sizes["paper"]["bytes"]["f32"] == 983_048  # 0.98 MB: (48 x 2 x 4 + 768 x 2) x 256 x 2
    assert sizes["paper"]["bytes"]["f16-semvae"] == 98_312
    # the embedded default: 4 + 4 channels and 40-d targets on 8 x 8
    assert sizes["embedded_default"]["bytes"]["f32"] == 8 + 2 * 64 * (8 * 2 * 4 + 40 * 2)
    for bad, message in (("f8", "unknown storage spec"), ("f16-pca4", "--repa-pca goes with")):
        result = CliRunner().invoke(main, [*args, "--store", bad, "--dry-run"])
        assert result.exit_code == 2 and message in result.output, result.output


@pytest.mark.parametrize("command", ["extract", "extract-features"])
def test_encoder_stride_is_refused_for_dinov2(tmp_path, command):
    from click.testing import CliRunner

    from sfd.cli import main

    args = [command, "--dataset", "folder", "--data-root", str(tmp_path), "--image-size", "224"]
    args += ["--out", str(tmp_path / "out"), "--encoder", "dinov2", "--encoder-path", str(tmp_path)]
    if command == "extract":
        args += ["--texture-ae", str(tmp_path / "vae"), "--semvae", str(tmp_path / "semvae")]
    result = CliRunner().invoke(main, [*args, "--encoder-stride", "8"])
    assert result.exit_code == 2, result.output
    assert "--encoder-stride applies to efficientnet-lite0 only; dinov2 is a ViT" in result.output
    assert not (tmp_path / "out").exists()


def test_encoder_antialias_reaches_dinov2_and_is_refused_for_efficientnet(tmp_path):
    from click.testing import CliRunner
    from PIL import Image
    from transformers import Dinov2Config, Dinov2Model

    from sfd.cli import main

    rng = np.random.default_rng(0)
    (tmp_path / "images" / "a").mkdir(parents=True)
    for i in range(2):
        pixels = rng.integers(0, 256, (40, 36, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / "images" / "a" / f"{i}.png")
    torch.manual_seed(0)
    Dinov2Model(Dinov2Config(**TINY_DINOV2)).save_pretrained(tmp_path / "dinov2")
    args = ["extract-features", "--dataset", "folder", "--data-root", str(tmp_path / "images")]
    args += ["--image-size", "32", "--channels", "3", "--device", "cpu", "--encoder", "dinov2"]
    args += ["--encoder-path", str(tmp_path / "dinov2")]
    runner = CliRunner()
    features = {}
    for name, flag in (("default", []), ("aa", ["--encoder-antialias"])):
        result = runner.invoke(main, [*args, *flag, "--out", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
        shards = FeatureShards(tmp_path / name)
        features[name] = torch.cat(list(shards.ordered(8)))
        assert shards.meta["extraction"]["encoder"]["antialias"] is (name == "aa")
    assert not torch.allclose(features["default"], features["aa"], atol=1e-3)
    result = runner.invoke(
        main,
        [*args[:-4], "--out", str(tmp_path / "effnet"), "--encoder-antialias"],
    )
    assert result.exit_code == 2, result.output
    assert "--encoder-antialias applies to dinov2 only" in result.output
    assert not (tmp_path / "effnet").exists()


def test_extract_default_storage_and_a_resume_keeps_what_was_begun(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from sfd.cli import main
    from sfd.data.latent_storage import DEFAULT_STORE
    from sfd.extract import SETTINGS_FILE

    monkeypatch.chdir(tmp_path)  # the SemVAE records its features relative to where it trained
    (tmp_path / "feats").mkdir()
    (tmp_path / "semvae").mkdir()
    (tmp_path / "semvae" / "semvae.json").write_text(json.dumps({"features": "feats"}))

    def dry(*more, out="x", semvae="semvae"):
        args = ["extract", "--data-root", ".", "--texture-ae", "t", "--semvae", semvae]
        return CliRunner().invoke(main, [*args, "--out", str(out), *more, "--dry-run"])

    def stored(*more, **kw):
        result = dry(*more, **kw)
        assert result.exit_code == 0, result.output
        printed = json.loads(result.stdout)
        return printed["store"]["spec"], printed["repa_pca"]

    # the default's PCA is fitted on the features the SemVAE was trained on, or on --repa-pca
    assert stored() == (DEFAULT_STORE, "feats") and DEFAULT_STORE == "f16-pca16"
    (tmp_path / "other").mkdir()
    assert stored("--repa-pca", "other") == ("f16-pca16", "other")
    assert stored("--no-repa") == ("f16", None)  # no targets to compress
    assert stored("--store", "f32") == ("f32", None)
    (tmp_path / "semvae" / "semvae.json").write_text(json.dumps({"features": "gone"}))
    result = dry()
    assert result.exit_code == 2 and "pass --repa-pca DIR" in result.output
    assert "its recorded features 'gone' are not here" in result.output
    # an extraction begun before the default changed (its settings record no storage) resumes
    # as the first layout; one begun with a storage resumes with it
    begun = tmp_path / "begun"
    begun.mkdir()
    (begun / SETTINGS_FILE).write_text(json.dumps({"repa": True}))
    assert stored(out=begun) == ("f32", None)
    (begun / SETTINGS_FILE).write_text(json.dumps({"storage": {"spec": "f16lv"}}))
    assert stored(out=begun) == ("f16lv", None)
