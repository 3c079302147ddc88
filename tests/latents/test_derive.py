"""Derived latent sets (texture-only, PCA semantics) and the texture-only model end to end."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from sfd.api import load_model
from sfd.data.latent_shards import LatentDataset, finalize_latent_set, write_latent_shard
from sfd.data.latent_storage import Storage
from sfd.data.tensor_files import MappedShard
from sfd.flow.guidance import Guidance, cfg_velocity
from sfd.generate import LatentSampler
from sfd.latents.composite import LatentLayout
from sfd.latents.derive import derive_latent_set
from sfd.latents.pca import pca_from_samples
from sfd.latents.repa_targets import reencode_latent_set
from sfd.training.loop import train
from tests.helpers import tiny_config, write_synthetic_latents

COUNT, SHARD = 12, 5
EXTRA = {"extraction": {"texture_ae_path": "tex-vae", "encoder": {"name": "pool"}}}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    cfg = tiny_config()
    d = write_synthetic_latents(tmp_path_factory.mktemp("base"), cfg, count=COUNT, shard_size=SHARD)
    finalize_latent_set(d, cfg.model.num_classes, 3, extra=EXTRA)  # with extraction settings
    return d


@pytest.fixture(scope="module")
def pca(base):
    repa = everything(LatentDataset(base))["repa"].double()  # (N, V, D, h, w)
    return pca_from_samples([repa.movedim(2, -1).reshape(-1, repa.shape[2])], 3)


def everything(ds: LatentDataset) -> dict[str, torch.Tensor]:
    """Every row of a latent set, both views: (N, V, ...) tensors and (N,) labels."""
    index = np.arange(len(ds))
    views = [ds.gather(index, np.full(len(ds), v)) for v in (0, 1)]
    out = {k: torch.stack([views[0][k], views[1][k]], 1) for k in views[0] if k != "label"}
    return {**out, "label": views[0]["label"]}


def expected_stats(rows: dict[str, torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and posterior-sample std over all rows and views, in numpy float64."""
    mu = torch.cat([rows["tex_mean"], rows["sem_mean"]], 2).double().numpy()
    sd = torch.cat([rows["tex_std"], rows["sem_std"]], 2).double().numpy()
    axes = (0, 1, 3, 4)
    return mu.mean(axes), np.sqrt(mu.var(axes) + (sd**2).mean(axes))


def assert_kept(derived: dict, original: dict) -> None:
    for key in ("label", "tex_mean", "tex_std", "repa"):
        assert torch.equal(derived[key], original[key]), key


def test_none_drops_the_semantic_channels_and_keeps_the_rest(base, tmp_path):
    meta = derive_latent_set(base, tmp_path, "none")
    ds, original = LatentDataset(tmp_path), everything(LatentDataset(base))
    assert (meta["sem_channels"], meta["tex_channels"], meta["count"]) == (0, 4, COUNT)
    derived = everything(ds)
    assert_kept(derived, original)
    assert derived["sem_mean"].shape == (COUNT, 2, 0, 8, 8) == derived["sem_std"].shape
    assert MappedShard(tmp_path / "shard-00000.safetensors")["sem_mean"].shape == (5, 2, 0, 8, 8)
    mean, std = expected_stats(derived)
    np.testing.assert_allclose(ds.stats.mean.numpy(), mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ds.stats.std.numpy(), std, rtol=1e-5)
    assert meta["extraction"] == EXTRA["extraction"]
    record = meta["derived_from"]
    assert record["base"] == str(base.resolve()) and record["semantic"] == "none"
    assert record["pca_dir"] is None


def test_pca_codes_the_repa_features(base, pca, tmp_path):
    meta = derive_latent_set(base, tmp_path, "pca", pca=pca)
    ds, original = LatentDataset(tmp_path), everything(LatentDataset(base))
    derived = everything(ds)
    assert meta["sem_channels"] == 3
    assert_kept(derived, original)
    repa = original["repa"].float()
    want = pca.encode(repa.flatten(0, 1)).unflatten(0, (COUNT, 2))
    torch.testing.assert_close(derived["sem_mean"], want.float(), atol=1e-5, rtol=1e-5)
    assert torch.equal(derived["sem_std"], torch.zeros_like(derived["sem_std"]))
    mean, std = expected_stats(derived)
    np.testing.assert_allclose(ds.stats.mean.numpy(), mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ds.stats.std.numpy(), std, rtol=1e-5)
    assert meta["derived_from"]["semantic"] == "pca" and meta["derived_from"]["pca_digest"]


def test_rerun_does_nothing_and_a_crash_loses_one_shard(base, tmp_path):
    meta = derive_latent_set(base, tmp_path, "none")
    files = sorted(tmp_path.glob("shard-*"))
    mtimes = {p.name: p.stat().st_mtime_ns for p in files}
    assert derive_latent_set(base, tmp_path, "none") == meta
    assert {p.name: p.stat().st_mtime_ns for p in files} == mtimes
    (tmp_path / "meta.json").unlink()  # a crash before the end: meta and shard 2 missing
    (tmp_path / "shard-00002.safetensors").unlink()
    again = derive_latent_set(base, tmp_path, "none")
    assert again["stats"] == meta["stats"] and again["shards"] == meta["shards"]
    assert (tmp_path / "shard-00000.safetensors").stat().st_mtime_ns == mtimes[
        "shard-00000.safetensors"
    ]


def test_another_set_is_never_overwritten(base, pca, tmp_path):
    derive_latent_set(base, tmp_path / "none", "none")
    with pytest.raises(ValueError, match="holds another latent set"):
        derive_latent_set(base, tmp_path / "none", "pca", pca=pca)
    with pytest.raises(ValueError, match="holds another latent set"):
        derive_latent_set(base, base, "none")  # the base itself is not derived
    with pytest.raises(ValueError, match="needs pca"):
        derive_latent_set(base, tmp_path / "x", "pca")
    with pytest.raises(ValueError, match="semantic must be one of"):
        derive_latent_set(base, tmp_path / "x", "semvae")


def test_pca_needs_repa_targets_on_the_latent_grid(pca, tmp_path):
    cfg = tiny_config()
    no_repa = write_synthetic_latents(tmp_path / "a", cfg, count=4, shard_size=4, repa=False)
    with pytest.raises(ValueError, match="holds no REPA targets"):
        derive_latent_set(no_repa, tmp_path / "out", "pca", pca=pca)
    coarse = tmp_path / "b"
    rows = everything(LatentDataset(no_repa))
    write_latent_shard(coarse, 0, {**rows, "repa": torch.zeros(4, 2, 32, 4, 4)})
    finalize_latent_set(coarse, cfg.model.num_classes, 1)
    with pytest.raises(ValueError, match="4x4 grid, the latents on 8x8"):
        derive_latent_set(coarse, tmp_path / "out", "pca", pca=pca)


@pytest.mark.parametrize("dual_timestep, delta_t", [(False, 0.0), (True, 0.0)])
def test_texture_only_model_trains_reloads_and_samples(base, tmp_path, dual_timestep, delta_t):
    derive_latent_set(base, tmp_path / "none", "none")
    cfg = tiny_config(total_steps=2, global_batch_size=4, log_every=1, ckpt_every=2)
    cfg = dataclasses.replace(
        cfg,
        latent=dataclasses.replace(cfg.latent, sem_channels=0),
        model=dataclasses.replace(cfg.model, dual_timestep=dual_timestep),
        flow=dataclasses.replace(cfg.flow, delta_t=delta_t),
        sample=dataclasses.replace(
            cfg.sample, method="heun", num_steps=3, cfg_scale_tex=2.0, compute_batch=2
        ),
    )
    result = train(cfg, tmp_path / "none", tmp_path / "run", progress=False)
    assert result.step == 2 and all(np.isfinite(h["loss"]) for h in result.history)
    loaded = load_model(tmp_path / "run")
    assert loaded.stats.mean.numel() == 4
    assert json.loads((tmp_path / "run" / "config.json").read_text())["latent"]["sem_channels"] == 0
    sampler = LatentSampler(loaded.model, loaded.config, loaded.stats)
    final = sampler.sample(range(3)).final
    assert final.shape == (3, 4, 8, 8) and bool(final.isfinite().all())
    assert torch.equal(sampler.texture_latents(final), loaded.stats.denormalize(final))


def test_guidance_of_absent_semantic_channels_costs_no_unconditional_pass():
    calls = []

    def model(x, *, t_tex, t_sem, y):
        calls.append(x.shape[0])
        return x + y.float()[:, None, None, None]

    model.null_class = 10
    x, y = torch.randn(3, 4, 2, 2), torch.tensor([1, 2, 3])
    velocity = cfg_velocity(model, y, Guidance(1.0, 3.0), LatentLayout(4, 0))  # C_s = 0
    out = velocity(x, torch.tensor(0.5), torch.tensor(0.5))
    assert calls == [3] and torch.equal(out, x + y.float()[:, None, None, None])


def _other_semantics(base, out, tex_noise: float = 0.0):
    """The base's images with other semantic channels (and, with ``tex_noise``, other texture
    posteriors: a set of other images)."""
    ds = LatentDataset(base)
    for k, info in enumerate(ds.meta["shards"]):
        shard = MappedShard(base / info["file"])
        t = {
            key: torch.from_numpy(np.array(shard[key]))
            for key in ("label", "tex_mean", "tex_std", "sem_mean", "sem_std", "repa")
        }
        t["sem_mean"], t["sem_std"] = 3.0 - 2.0 * t["sem_mean"], 2.0 * t["sem_std"]
        t["repa"] = torch.zeros_like(t["repa"])
        t["tex_mean"] = t["tex_mean"] + tex_noise
        write_latent_shard(out, k, t)
    finalize_latent_set(out, ds.num_classes, len(ds.meta["shards"]))
    return out


def test_from_takes_only_the_semantic_channels_of_the_source(base, tmp_path):
    source = _other_semantics(base, tmp_path / "source")
    meta = derive_latent_set(base, tmp_path / "out", "from", source=source)
    derived = everything(LatentDataset(tmp_path / "out"))
    original, other = everything(LatentDataset(base)), everything(LatentDataset(source))
    assert_kept(derived, original)  # labels, texture posteriors and REPA targets of the base
    assert torch.equal(derived["sem_mean"], other["sem_mean"])
    assert torch.equal(derived["sem_std"], other["sem_std"])
    assert not torch.equal(derived["sem_mean"], original["sem_mean"])
    mean, std = expected_stats(derived)
    np.testing.assert_allclose(LatentDataset(tmp_path / "out").stats.mean.numpy(), mean, rtol=1e-5)
    record = meta["derived_from"]
    assert record["semantic"] == "from" and record["source"] == str(source.resolve())
    assert derive_latent_set(base, tmp_path / "out", "from", source=source) == meta  # cached


def test_from_refuses_a_source_of_other_images(base, tmp_path):
    source = _other_semantics(base, tmp_path / "source", tex_noise=1e-3)
    with pytest.raises(ValueError, match="tex_mean differs"):
        derive_latent_set(base, tmp_path / "out", "from", source=source)
    assert not (tmp_path / "out" / "meta.json").exists()
    with pytest.raises(ValueError, match="needs source"):
        derive_latent_set(base, tmp_path / "out2", "from")


def test_a_set_stored_otherwise_is_refused_before_anything_is_written(base, tmp_path):
    stored = tmp_path / "f16"
    reencode_latent_set(base, stored, Storage.parse("f16"))
    assert LatentDataset(stored).meta["storage"]  # a version-2 set, with its storage record
    with pytest.raises(ValueError, match="stored as f16; derive from an f32 set"):
        derive_latent_set(stored, tmp_path / "out", "none")
    assert not (tmp_path / "out").exists()


def test_the_derived_meta_carries_the_extraction_settings_and_recomputes_the_rest(base, tmp_path):
    meta = derive_latent_set(base, tmp_path / "none", "none")
    source = LatentDataset(base).meta
    for key, value in EXTRA.items():
        assert meta[key] == value
    assert meta["sem_channels"] == 0 != source["sem_channels"]
    assert meta["shards"] != source["shards"] and meta["stats"] != source["stats"]
    assert "storage" not in meta and meta["version"] == 1
