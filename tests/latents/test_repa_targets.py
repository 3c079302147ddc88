"""REPA targets from stored codes (PCA, SemVAE) on the device, and re-encoded latent sets."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sfd.data.latent_shards import LatentDataset
from sfd.data.latent_storage import SEMVAE_DIR, Storage
from sfd.latents.pca import pca_from_samples
from sfd.latents.repa_targets import reencode_latent_set, repa_targets
from sfd.latents.semvae import SemanticVAE, SemVAEConfig, save_semvae
from sfd.training.batches import Batch
from sfd.training.loop import Trainer, train
from tests.helpers import tiny_config, write_synthetic_latents

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return write_synthetic_latents(tmp_path_factory.mktemp("base"), tiny_config(), count=20)


def fitted_pca(directory, k):
    repa = torch.from_numpy(np.array(LatentDataset(directory).shards[0]["repa"])).float()
    return pca_from_samples([repa.movedim(2, -1).reshape(-1, repa.shape[2])], k)


def semvae_dir(tmp_path):
    torch.manual_seed(0)
    cfg = tiny_config()
    config = SemVAEConfig(
        in_dim=cfg.model.repa_dim,
        latent_channels=cfg.latent.sem_channels,
        width=16,
        depth=1,
        num_heads=2,
        grid=cfg.latent.size,
    )
    return save_semvae(SemanticVAE(config), tmp_path / "semvae", {"encoder": None})


def test_pca_targets_are_the_projection_of_the_full_ones(base, tmp_path):
    dim = tiny_config().model.repa_dim
    pca = fitted_pca(base, dim)  # all components: the projection is the identity
    out = tmp_path / "pca"
    meta = reencode_latent_set(base, out, Storage.parse("f16-pca32"), pca=pca)
    assert meta["version"] == 2 and meta["repa_dim"] == dim
    assert meta["storage"]["spec"] == "f16-pca32" and meta["reencoded_from"]["storage"]
    full, coded = LatentDataset(base), LatentDataset(out)
    index, view = np.arange(20), np.arange(20) % 2
    truth = full.gather(index, view)["repa"].float()
    target = repa_targets(coded)(coded.gather(index, view)["repa"])
    assert ((target - truth).norm() / truth.norm()) < 2e-3  # fp16 codes


def test_a_rerun_keeps_the_set_and_another_storage_is_refused(base, tmp_path):
    out = tmp_path / "f16"
    first = reencode_latent_set(base, out, Storage.parse("f16-flip"))
    stamp = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert reencode_latent_set(base, out, Storage.parse("f16-flip")) == first
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamp
    with pytest.raises(ValueError, match="re-encoded latent set"):
        reencode_latent_set(base, out, Storage.parse("f16lv"))
    with pytest.raises(ValueError, match="re-encode an f32 set"):
        reencode_latent_set(out, tmp_path / "again", Storage.parse("f16"))


def test_semvae_targets_decode_the_stored_semantic_mean(base, tmp_path):
    out = tmp_path / "sv"
    meta = reencode_latent_set(
        base, out, Storage.parse("f16-semvae"), semvae_dir=semvae_dir(tmp_path)
    )
    assert (out / SEMVAE_DIR / "semvae.safetensors").exists() and meta["repa_dim"] == 32
    ds = LatentDataset(out)
    rows = ds.gather(np.array([3, 4]), np.array([1, 0]))
    decode = repa_targets(ds)
    assert torch.equal(rows["repa"], rows["sem_mean"])
    assert torch.equal(decode(rows["repa"]), decode.semvae.decode(rows["sem_mean"]))
    (out / SEMVAE_DIR / "semvae.safetensors").unlink()
    with pytest.raises(ValueError, match=f"{SEMVAE_DIR} is missing or not a SemVAE"):
        LatentDataset(out)


@pytest.mark.parametrize("spec", ["f16-pca8-flip", "f16-semvae"])
def test_training_decodes_stored_targets_on_the_device(base, tmp_path, spec):
    storage = Storage.parse(spec)
    kw = {"pca": fitted_pca(base, 8)} if storage.repa == "pca" else {}
    kw |= {"semvae_dir": semvae_dir(tmp_path)} if storage.repa == "semvae" else {}
    data = tmp_path / "data"
    reencode_latent_set(base, data, storage, **kw)
    cfg = tiny_config(total_steps=2, global_batch_size=8, log_every=1)
    trainer = Trainer(cfg, data, tmp_path / "probe")
    step = trainer.step_fn
    assert step.repa_targets is not None
    b = trainer.micro_batches(0)[0]
    loss, terms = step.loss(trainer.module, b)
    decoded = Batch(b.x1, b.y, b.x0, b.base_time, step.repa_targets(b.repa))
    step.repa_targets = None
    again, terms_again = step.loss(trainer.module, decoded)
    assert torch.equal(loss, again) and torch.equal(terms, terms_again)
    assert terms[3] > 0  # the REPA term is in the loss
    train(cfg, data, tmp_path / "run", progress=False)
    logged = [json.loads(line) for line in (tmp_path / "run/log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [1, 2] and all(r["loss_repa"] > 0 for r in logged)
