"""Latent sets stored small (``sfd extract --store``) given to ``sfd train --data``: a missing
or misshapen PCA file, an unknown storage option, a missing SemVAE copy: one line, exit 3."""

import json

import pytest
import torch

from sfd.data.latent_storage import PCA_FILE, SEMVAE_DIR, Storage
from sfd.data.tensor_files import atomic_save_safetensors
from sfd.errors import EXIT_BAD_INPUT
from sfd.latents.pca import PCAEncoder
from sfd.latents.repa_targets import reencode_latent_set
from tests.badinput.conftest import TRAIN, refused


def _pca_set(latents, out):
    dim, k = 32, 4  # the tiny preset's REPA dim
    q, _ = torch.linalg.qr(torch.randn(dim, k, generator=torch.Generator().manual_seed(0)))
    pca = PCAEncoder(torch.zeros(dim), q.T, torch.ones(k), float(k))
    reencode_latent_set(latents, out, Storage.parse("f16-pca4-flip"), pca=pca)
    return out


def _edit_storage(data, **changes):
    meta = json.loads((data / "meta.json").read_text())
    meta["storage"].update(changes)
    (data / "meta.json").write_text(json.dumps(meta))


CASES = {
    "pca file missing": (lambda d: (d / PCA_FILE).unlink(), f"{PCA_FILE} is missing"),
    "pca file misshapen": (
        lambda d: (
            atomic_save_safetensors(
                d / PCA_FILE, {"mean": torch.zeros(32), "components": torch.zeros(3, 32)}
            ),
            _edit_storage(d, sha256=None),
        ),
        "expected tensors",
    ),
    "pca file changed": (
        lambda d: atomic_save_safetensors(
            d / PCA_FILE, {"mean": torch.ones(32), "components": torch.zeros(4, 32)}
        ),
        "does not match the sha256",
    ),
    "unknown option": (lambda d: _edit_storage(d, quantize="int4"), "'quantize'"),
    "unknown value": (lambda d: _edit_storage(d, repa="online"), "'online'"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_stored_set(latents, tmp_path, case):
    data = _pca_set(latents, tmp_path / "data")
    corrupt, needle = CASES[case]
    corrupt(data)
    refused(
        [*TRAIN, "--data", data, "--out", tmp_path / "run"], EXIT_BAD_INPUT, needle, inputs=[data]
    )


def test_a_semvae_set_without_its_semvae(latents, tmp_path):
    from sfd.latents.semvae import SemanticVAE, SemVAEConfig, save_semvae

    config = SemVAEConfig(in_dim=32, latent_channels=2, width=16, depth=1, num_heads=2, grid=8)
    save_semvae(SemanticVAE(config), tmp_path / "semvae")
    data = tmp_path / "data"
    reencode_latent_set(latents, data, Storage.parse("f16-semvae"), semvae_dir=tmp_path / "semvae")
    (data / SEMVAE_DIR / "semvae.json").unlink()
    refused(
        [*TRAIN, "--data", data, "--out", tmp_path / "run"],
        EXIT_BAD_INPUT,
        SEMVAE_DIR,
        inputs=[data],
    )


def test_a_stored_set_trains(latents, tmp_path):
    from tests.badinput.conftest import accepted

    accepted([*TRAIN, "--data", _pca_set(latents, tmp_path / "data"), "--out", tmp_path / "run"])
