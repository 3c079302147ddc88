"""Storage options of latent sets: sizes, round trips within the stated error, old sets read
bit for bit, unknown options and broken PCA files refused in one line, seeded batches."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sfd.data.latent_shards import LatentDataset, finalize_latent_set, write_latent_shard
from sfd.data.latent_storage import (
    PAPER_SHAPES,
    PCA_FILE,
    Shapes,
    Storage,
    bytes_per_image,
)
from sfd.data.shards import write_shard
from sfd.data.tensor_files import atomic_save_safetensors
from sfd.errors import BadInputError
from sfd.training.batches import EpochOrder, global_batch
from tests.helpers import tiny_config

N, SHARD, C_Z, C_S, H, D, K = 12, 5, 4, 2, 8, 32, 6
SPECS = ("f32", "f16", "f16lv", "f32-flip", "f16-pca6", "f16lv-pca6-flip", "f16-semvae")


def raw_tensors(n: int, seed: int) -> dict[str, torch.Tensor]:
    """Float posteriors (std over 5 decades) and low-rank REPA targets whose view 1 is the
    exact mirror of view 0, so a derived flip is exact and a K-component PCA nearly so."""
    basis = torch.randn(K, D, generator=torch.Generator().manual_seed(99))  # shared by shards
    g = torch.Generator().manual_seed(seed)
    codes = torch.randn(n, 1, K, H, H, generator=g)
    repa = torch.einsum("kd,nvkhw->nvdhw", basis, codes) + 0.5
    repa = torch.cat([repa, repa.flip(-1)], dim=1)
    std = torch.exp(torch.empty(n, 2, C_Z + C_S, H, H).uniform_(-11.5, 0.0, generator=g))
    mean = 3 * torch.randn(n, 2, C_Z + C_S, H, H, generator=g)
    return {
        "label": torch.arange(n) % 10,
        "tex_mean": mean[:, :, :C_Z],
        "tex_std": std[:, :, :C_Z],
        "sem_mean": mean[:, :, C_Z:],
        "sem_std": std[:, :, C_Z:],
        "repa": repa.half(),
    }


def write_set(directory, storage: Storage, pca=None) -> list[dict]:
    """A set of N images in shards of SHARD; returns the raw tensors of each shard."""
    raws = []
    for k, lo in enumerate(range(0, N, SHARD)):
        raws.append(raw_tensors(min(SHARD, N - lo), seed=k))
        write_latent_shard(directory, k, raws[-1], storage, pca)
    if storage.repa == "semvae":
        from sfd.latents.repa_targets import write_target_model
        from sfd.latents.semvae import SemanticVAE, SemVAEConfig

        torch.manual_seed(0)
        cfg = SemVAEConfig(in_dim=D, latent_channels=C_S, width=16, depth=1, num_heads=2, grid=H)
        write_target_model(directory, storage, semvae=SemanticVAE(cfg).eval())
    finalize_latent_set(directory, 10, len(raws), storage=storage)
    return raws


def pca_of(raws) -> dict[str, torch.Tensor]:
    from sfd.latents.pca import pca_from_samples

    x = torch.cat([r["repa"] for r in raws]).float().movedim(2, -1).reshape(-1, D)
    pca = pca_from_samples([x], K)
    return {"mean": pca.mean.float(), "components": pca.components.float()}


def stored_set(tmp_path, spec: str):
    storage = Storage.parse(spec)
    tmp_path.mkdir(parents=True, exist_ok=True)
    pca = pca_of([raw_tensors(min(SHARD, N - lo), k) for k, lo in enumerate(range(0, N, SHARD))])
    if storage.repa == "pca":
        atomic_save_safetensors(tmp_path / PCA_FILE, pca)
    raws = write_set(tmp_path, storage, pca if storage.repa == "pca" else None)
    return LatentDataset(tmp_path), raws, pca


def test_specs_name_every_option_and_bad_ones_are_refused():
    for spec in (*SPECS, "f16-pca64-flip", "f32-semvae", "f16lv-flip"):
        assert Storage.parse(spec).spec == spec
    assert Storage.parse("f32").legacy and not Storage.parse("f16").legacy
    for bad in ("f8", "f16-pca0", "f16-semvae-flip", "f16-pca", "f16-flip-pca4", ""):
        with pytest.raises(ValueError, match="spec|K must|no flip"):
            Storage.parse(bad)


def test_bytes_per_image_at_the_paper_shapes_and_as_written(tmp_path):
    size = {s: bytes_per_image(Storage.parse(s), PAPER_SHAPES)["total"] for s in SPECS[:3]}
    # per image: 8 B label; 2 views x (32 + 16) x 16 x 16 mean + std; 2 x 768 x 16 x 16 fp16
    assert size["f32"] == 8 + 2 * 2 * 48 * 256 * 4 + 2 * 768 * 256 * 2 == 983_048
    assert size["f16"] == size["f16lv"] == 8 + 2 * 2 * 48 * 256 * 2 + 2 * 768 * 256 * 2
    assert bytes_per_image(Storage.parse("f16-pca32-flip"), PAPER_SHAPES)["total"] == 114_696
    assert bytes_per_image(Storage.parse("f16-semvae"), PAPER_SHAPES)["total"] == 98_312
    shapes = Shapes(C_Z, C_S, H, D, H)
    for spec in SPECS:  # the formula is what the writer writes (tensor payload)
        ds, _, _ = stored_set(tmp_path / spec, spec)
        payload = sum(a.nbytes for s in ds.shards for a in s.arrays.values())
        assert payload == N * bytes_per_image(ds.storage, shapes)["total"], spec


def test_a_first_version_set_reads_bit_identically(tmp_path):
    """A set as the first version wrote it (write_shard of float32 / fp16 tensors, meta v1)
    reads back exactly, and the f32 writer writes those same bytes."""
    raw = raw_tensors(N, seed=3)
    old = {k: v.float() for k, v in raw.items() if k not in ("label", "repa")}
    old |= {"label": raw["label"].long(), "repa": raw["repa"].half()}
    info = write_shard(tmp_path / "old", 0, old)
    meta = finalize_latent_set(tmp_path / "old", 10, 1)
    assert meta["version"] == 1 and "storage" not in meta
    assert write_latent_shard(tmp_path / "new", 0, raw)["sha256"] == info["sha256"]
    ds = LatentDataset(tmp_path / "old")
    assert ds.storage.legacy
    index, view = np.array([7, 0, 11, 3]), np.array([1, 0, 1, 1])
    rows = ds.gather(index, view)
    for key, value in old.items():
        want = value[index] if key == "label" else value[index, view]
        assert rows[key].dtype == want.dtype and torch.equal(rows[key], want), key


@pytest.mark.parametrize("spec", SPECS)
def test_each_option_round_trips_within_its_stated_error(tmp_path, spec):
    ds, raws, pca = stored_set(tmp_path, spec)
    st = ds.storage
    index = np.arange(SHARD + 2)  # across two shards
    view = index % 2
    rows = ds.gather(index, view)
    raw = {k: torch.cat([r[k] for r in raws]) for k in raws[0]}
    pick = {k: v[index] if k == "label" else v[index, view] for k, v in raw.items()}
    assert torch.equal(rows["label"], pick["label"])
    for part in ("tex", "sem"):
        mean, std = rows[f"{part}_mean"], rows[f"{part}_std"]
        assert mean.dtype == std.dtype == torch.float32
        # float16 rounds to half an ulp: |err| <= 2^-11 |x|, + 2^-25 below 2^-14 (subnormals)
        tol, floor = (0.0, 0.0) if st.posterior == "float32" else (2.0**-11, 2.0**-25)
        err = (mean - pick[f"{part}_mean"]).abs()
        assert (err <= tol * pick[f"{part}_mean"].abs() + floor).all()
        # logvar in float16: |d logvar| <= 2^-11 |logvar|, so std is off by exp(|d| / 2) - 1
        truth = pick[f"{part}_std"]
        if st.std_key == "logvar":
            tol, floor = torch.exp(2 * truth.log().abs() * 2.0**-12) - 1, 0.0
        err = (std - truth).abs()
        assert (err <= tol * truth * 1.0001 + floor + 1e-9).all(), part
    from sfd.latents.repa_targets import repa_targets

    decode = repa_targets(ds)
    target = rows["repa"].float() if decode is None else decode(rows["repa"])
    if st.repa == "semvae":
        semvae = decode.semvae
        assert torch.allclose(target, semvae.decode(rows["sem_mean"]), atol=1e-6)
        return
    truth = pick["repa"].float()  # view 1 is the exact mirror, so a derived flip is exact
    rel = (target - truth).norm() / truth.norm()
    assert rel <= (0.0 if st.repa == "full" else 2e-3), float(rel)


def _corrupt_meta(directory, change) -> None:
    meta = json.loads((directory / "meta.json").read_text())
    change(meta)
    (directory / "meta.json").write_text(json.dumps(meta))


def test_options_this_reader_does_not_know_are_refused_by_name(tmp_path):
    stored_set(tmp_path, "f16-pca6")
    _corrupt_meta(tmp_path, lambda m: m["storage"].update(quantize="int4"))
    with pytest.raises(BadInputError, match="unknown storage option.*quantize"):
        LatentDataset(tmp_path)
    _corrupt_meta(tmp_path, lambda m: m["storage"].pop("quantize"))
    _corrupt_meta(tmp_path, lambda m: m["storage"].update(posterior="bfloat16"))
    with pytest.raises(BadInputError, match="bfloat16"):
        LatentDataset(tmp_path)
    _corrupt_meta(tmp_path, lambda m: m.update(version=3))
    with pytest.raises(BadInputError, match="v3"):
        LatentDataset(tmp_path)


def test_a_missing_or_misshapen_pca_file_is_one_line_naming_it(tmp_path):
    stored_set(tmp_path, "f16-pca6")
    (tmp_path / PCA_FILE).unlink()
    with pytest.raises(BadInputError, match=f"{PCA_FILE} is missing") as err:
        LatentDataset(tmp_path)
    assert "\n" not in str(err.value)
    bad = {"mean": torch.zeros(D), "components": torch.zeros(K + 1, D)}
    atomic_save_safetensors(tmp_path / PCA_FILE, bad)
    _corrupt_meta(tmp_path, lambda m: m["storage"].pop("sha256"))
    with pytest.raises(BadInputError, match=f"{PCA_FILE}: expected tensors") as err:
        LatentDataset(tmp_path)
    assert "\n" not in str(err.value) and "(7, 32)" in str(err.value)


def test_a_changed_pca_file_fails_its_hash(tmp_path):
    _, _, pca = stored_set(tmp_path, "f16-pca6")
    atomic_save_safetensors(tmp_path / PCA_FILE, {k: v + 1 for k, v in pca.items()})
    with pytest.raises(BadInputError, match="sha256"):
        LatentDataset(tmp_path)


@pytest.mark.parametrize("spec", SPECS)
def test_batches_stay_pure_functions_of_seed_and_step(tmp_path, spec):
    stored_set(tmp_path, spec)
    cfg = tiny_config(global_batch_size=8)
    first, second = LatentDataset(tmp_path), LatentDataset(tmp_path)
    for step in (0, 3):
        whole = global_batch(first, EpochOrder(N, 7), cfg, step)
        again = global_batch(second, EpochOrder(N, 7), cfg, step)
        parts = [global_batch(second, EpochOrder(N, 7), cfg, step, lo, lo + 4) for lo in (0, 4)]
        for name in ("x1", "y", "x0", "base_time", "repa"):
            a, b = getattr(whole, name), getattr(again, name)
            assert torch.equal(a, b), name
            assert torch.equal(a, torch.cat([getattr(p, name) for p in parts])), name


def test_half_precision_overflow_is_refused(tmp_path):
    raw = raw_tensors(2, seed=0)
    raw["tex_mean"][0, 0, 0, 0, 0] = 1e6
    with pytest.raises(ValueError, match="tex_mean exceeds the float16 range"):
        write_latent_shard(tmp_path, 0, raw, Storage.parse("f16"))
