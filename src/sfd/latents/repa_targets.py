"""REPA targets from what a latent set stores (docs/FORMATS.md, "Storage options").

:mod:`sfd.data.latent_storage` names the options. Here are the models that turn the stored
form into targets and the writers of those models and of re-encoded sets:

- :class:`RepaTargets` maps a batch's stored targets (B, K, h, w) to the targets the REPA loss
  compares with (B, D, h, w), on the training device: ``mean + components^T code`` for
  ``pca`` storage, the SemVAE decoder applied to the semantic mean for ``semvae`` storage;
  :func:`repa_targets` builds it for a set (``None`` for ``full`` storage, whose targets are
  read as they are);
- :func:`write_target_model` writes a set's PCA file or SemVAE copy before its shards and returns
  the PCA (float32, as stored) the shards' codes are computed with;
- :func:`reencode_latent_set` copies a first-version set into another storage, shard by shard
  (the ablation's ``store-*`` rows train on such sets).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sfd.data.latent_shards import (
    COMPUTED_META_KEYS,
    LatentDataset,
    finalize_latent_set,
    write_latent_shard,
)
from sfd.data.latent_storage import PCA_FILE, SEMVAE_DIR, Storage
from sfd.data.shards import finished_shard
from sfd.data.tensor_files import MappedShard, atomic_save_safetensors
from sfd.latents.pca import PCAEncoder
from sfd.latents.semvae import SemanticVAE, load_semvae, save_semvae
from sfd.locks import claim_settings

log = logging.getLogger(__name__)

CLAIM_FILE = "reencode.json"


class RepaTargets(nn.Module):
    """Stored REPA targets -> targets (module docstring); deterministic, without gradients."""

    def __init__(
        self,
        kind: str,
        mean: torch.Tensor | None = None,
        components: torch.Tensor | None = None,
        semvae: SemanticVAE | None = None,
    ) -> None:
        super().__init__()
        if kind not in ("pca", "semvae") or (kind == "pca") != (components is not None):
            raise ValueError(f"RepaTargets: kind 'pca' needs mean and components; got {kind!r}")
        self.kind, self.semvae = kind, semvae
        if kind == "pca":
            self.register_buffer("mean", mean.float().clone())
            self.register_buffer("components", components.float().clone())

    @torch.no_grad()
    def forward(self, stored: torch.Tensor) -> torch.Tensor:
        if self.kind == "pca":
            out = torch.einsum("kd,bkhw->bdhw", self.components, stored.float())
            return out + self.mean.view(1, -1, 1, 1)
        return self.semvae.decode(stored.float()).float()


def repa_targets(dataset: LatentDataset, device: torch.device | str = "cpu") -> RepaTargets | None:
    """The target model of ``dataset`` on ``device`` (None: targets are stored in full)."""
    kind = dataset.storage.repa
    if not dataset.has_repa or kind == "full":
        return None
    if kind == "pca":
        pca = dataset.repa_pca
        model = RepaTargets(
            "pca", torch.from_numpy(pca["mean"]), torch.from_numpy(pca["components"])
        )
    else:
        model = RepaTargets("semvae", semvae=load_semvae(dataset.directory / SEMVAE_DIR, device))
    return model.to(device).eval()


def stored_pca(storage: Storage, pca: PCAEncoder | None) -> dict[str, torch.Tensor] | None:
    """The PCA as a ``pca`` storage stores it (float32 ``mean``, ``components``), checked
    against the storage's K; None for other storages."""
    if storage.repa != "pca":
        return None
    if pca is None or pca.channels != storage.pca_components:
        have = "no PCA" if pca is None else f"a PCA of {pca.channels} components"
        raise ValueError(
            f"storage {storage.spec} needs a PCA of {storage.pca_components} components of "
            f"the encoder tokens; got {have}"
        )
    return {"mean": pca.mean.float().cpu(), "components": pca.components.float().cpu()}


def write_target_model(
    out_dir: Path, storage: Storage, pca: PCAEncoder | None = None, semvae: nn.Module | None = None
) -> dict[str, torch.Tensor] | None:
    """Write the PCA file (``pca`` storage) or the SemVAE copy (``semvae`` storage) of a set
    into ``out_dir``; returns :func:`stored_pca`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = stored_pca(storage, pca)
    if tensors is not None:
        atomic_save_safetensors(out_dir / PCA_FILE, tensors, metadata={"format": "sfd-repa-pca"})
    if storage.repa == "semvae":
        check_semvae_storage(storage, semvae)
        save_semvae(semvae, out_dir / SEMVAE_DIR, {"encoder": semvae.trained_on})
    return tensors


def check_semvae_storage(storage: Storage, semvae: nn.Module | None) -> None:
    if storage.repa == "semvae" and not isinstance(semvae, SemanticVAE):
        raise ValueError(
            f"storage {storage.spec} decodes the semantic latent with a SemVAE; the semantic "
            f"encoder here is a {type(semvae).__name__}"
        )


def reencode_latent_set(
    base_dir: str | Path,
    out_dir: str | Path,
    storage: Storage,
    pca: PCAEncoder | None = None,
    semvae_dir: str | Path | None = None,
) -> dict:
    """Write ``base_dir`` (a first-version set) into ``out_dir`` stored as ``storage``; returns
    the new meta. A rerun resumes (finished shards are kept); another set in ``out_dir`` is
    refused. ``pca``: for ``pca`` storage; ``semvae_dir``: the SemVAE of ``semvae`` storage."""
    base, out_dir = LatentDataset(base_dir), Path(out_dir)
    if not base.storage.legacy:
        raise ValueError(f"{base_dir} is stored as {base.storage.spec}; re-encode an f32 set")
    digest = hashlib.sha256("".join(i["sha256"] for i in base.meta["shards"]).encode())
    record = {"base_digest": digest.hexdigest(), "storage": storage.record()}
    if pca is not None:
        record["pca_sha256"] = hashlib.sha256(pca.components.double().numpy().tobytes()).hexdigest()
    if (out_dir / "meta.json").exists():
        done = LatentDataset(out_dir).meta
        if done.get("reencoded_from") == record:
            return done
    claim_settings(out_dir / CLAIM_FILE, record, "a re-encoded latent set", "use a new directory")
    semvae = load_semvae(semvae_dir) if storage.repa == "semvae" and semvae_dir else None
    if storage.repa == "semvae" and semvae is None:
        raise ValueError(f"storage {storage.spec} needs the SemVAE directory (semvae_dir)")
    stored_pca = write_target_model(out_dir, storage, pca, semvae)
    for k, info in enumerate(base.meta["shards"]):
        if finished_shard(out_dir, k, verify=True) is None:
            shard = MappedShard(base.directory / info["file"])
            tensors = {key: torch.from_numpy(np.array(shard[key])) for key in shard.arrays}
            write_latent_shard(out_dir, k, tensors, storage, stored_pca)
    extra = {k: v for k, v in base.meta.items() if k not in COMPUTED_META_KEYS}
    extra["reencoded_from"] = record
    meta = finalize_latent_set(
        out_dir, base.num_classes, len(base.meta["shards"]), extra, storage, base.has_repa
    )
    log.info("re-encoded %s as %s into %s", base_dir, storage.spec, out_dir)
    return meta
