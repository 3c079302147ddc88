"""What a latent set stores, and how: the storage options of ``sfd-latents`` (docs/FORMATS.md).

A :class:`Storage` is chosen at extraction and recorded in ``meta.json``; the reader
(:mod:`sfd.data.latent_shards`) turns what is stored back into what training reads. Options:

- ``posterior``: ``float32`` (mean and std, the format's first version), ``float16`` (mean and
  std in IEEE half) or ``float16-logvar`` (mean and log-variance in half; std = exp(logvar / 2));
- ``repa`` (the REPA targets): ``full`` (the encoder tokens in float16), ``pca`` (K components
  of a PCA of the encoder tokens in float16, the PCA stored beside the shards in
  :data:`PCA_FILE`; the target is ``mean + components^T code``, on the device) or ``semvae``
  (nothing stored: the target is the SemVAE decoder's reconstruction of the stored semantic
  mean, on the device; the SemVAE is copied into :data:`SEMVAE_DIR`);
- ``flip``: the flipped view's stored targets are ``stored`` or ``derived`` (only view 0 is
  stored; view 1's targets are its horizontal mirror, the encoder taken as flip-equivariant).

A spec string names one choice: ``POSTERIOR[-pcaK|-semvae][-flip]`` with POSTERIOR ``f32``,
``f16`` or ``f16lv`` (e.g. ``f16-pca32-flip``); ``f32`` is the first version's layout, and a
set written with it is byte for byte what the first version wrote (``meta.json`` version 1).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sfd.data.tensor_files import MappedShard, sha256_file
from sfd.errors import BadInputError

POSTERIORS = {"float32": "f32", "float16": "f16", "float16-logvar": "f16lv"}
REPA_KINDS = ("full", "pca", "semvae")
FLIPS = ("stored", "derived")
PCA_FILE = "repa_pca.safetensors"  # tensors ``mean`` (D,) and ``components`` (K, D), float32
SEMVAE_DIR = "repa_semvae"  # a saved SemVAE (sfd.latents.semvae.save_semvae)
_SPEC = re.compile(r"(f32|f16|f16lv)(?:-(pca(\d+)|semvae))?(-flip)?")
_FIELDS = ("posterior", "repa", "pca_components", "flip")
# meta.json's storage record: the options plus what the reader needs to find the PCA / SemVAE
_RECORD_KEYS = {*_FIELDS, "spec", "file", "sha256", "dir"}


@dataclass(frozen=True)
class Storage:
    """One storage choice (module docstring); ``Storage()`` is the first version's layout."""

    posterior: str = "float32"
    repa: str = "full"
    pca_components: int = 0  # K, for repa == "pca"
    flip: str = "stored"

    def __post_init__(self) -> None:
        if self.posterior not in POSTERIORS:
            raise ValueError(
                f"posterior storage must be one of {list(POSTERIORS)}; got {self.posterior!r}"
            )
        if self.repa not in REPA_KINDS:
            raise ValueError(f"REPA storage must be one of {list(REPA_KINDS)}; got {self.repa!r}")
        if self.flip not in FLIPS:
            raise ValueError(f"flip must be one of {list(FLIPS)}; got {self.flip!r}")
        if (self.repa == "pca") != (self.pca_components > 0):
            raise ValueError(
                "pca_components (K >= 1) goes with REPA storage 'pca' and only with it"
            )
        if self.repa == "semvae" and self.flip == "derived":
            raise ValueError("REPA storage 'semvae' stores no targets: there is no flip to derive")

    @classmethod
    def parse(cls, spec: str) -> Storage:
        """The storage a spec string names (module docstring)."""
        m = _SPEC.fullmatch(spec.strip())
        if m is None:
            raise ValueError(
                f"unknown storage spec {spec!r}; expected POSTERIOR[-pcaK|-semvae][-flip] with "
                f"POSTERIOR f32, f16 or f16lv (e.g. f16, f16-pca32-flip, f16-semvae)"
            )
        posterior = {v: k for k, v in POSTERIORS.items()}[m.group(1)]
        repa = "pca" if m.group(3) else (m.group(2) or "full")
        k = int(m.group(3) or 0)
        if repa == "pca" and k < 1:
            raise ValueError(f"storage spec {spec!r}: K must be >= 1")
        return cls(posterior, repa, k, "derived" if m.group(4) else "stored")

    @property
    def spec(self) -> str:
        repa = {"full": "", "pca": f"-pca{self.pca_components}", "semvae": "-semvae"}[self.repa]
        return POSTERIORS[self.posterior] + repa + ("-flip" if self.flip == "derived" else "")

    @property
    def legacy(self) -> bool:
        """The first version's layout (float32 posteriors, both views' full targets)."""
        return self == Storage()

    @property
    def std_key(self) -> str:
        return "logvar" if self.posterior == "float16-logvar" else "std"

    @property
    def posterior_dtype(self) -> str:
        return "float32" if self.posterior == "float32" else "float16"

    @property
    def repa_key(self) -> str | None:
        """The shard tensor holding the stored targets (None: nothing stored)."""
        return {"full": "repa", "pca": "repa_pca", "semvae": None}[self.repa]

    def repa_views(self, views: int) -> int:
        return 1 if self.flip == "derived" else views

    def record(self) -> dict:
        return {"spec": self.spec, **{k: getattr(self, k) for k in _FIELDS}}

    @classmethod
    def from_meta(cls, meta: dict, where: Path) -> Storage:
        """The storage a ``meta.json`` records (none: the first version's); anything this reader
        does not know is refused by name."""
        if meta.get("version") == 1:
            if "storage" in meta:
                raise BadInputError(f"{where}: version 1 has no 'storage'; the file is corrupt")
            return cls()
        rec = meta.get("storage")
        if not isinstance(rec, dict):
            raise BadInputError(f"{where}: version 2 needs a 'storage' object; got {rec!r}")
        unknown = sorted(set(rec) - _RECORD_KEYS)
        if unknown:
            raise BadInputError(
                f"{where}: unknown storage option(s) {unknown}; this sfd reads {sorted(_FIELDS)} "
                f"(a newer sfd wrote it?)"
            )
        try:
            return cls(**{k: rec[k] for k in _FIELDS})
        except (KeyError, TypeError, ValueError) as err:
            raise BadInputError(f"{where}: storage {rec!r} is not one sfd reads: {err}") from None


FIRST_LAYOUT = Storage()  # the first version's: what a set without a storage record holds
# What a new extraction stores unless told otherwise (docs/ABLATION.md, "Storage rows": the
# smallest option that trained within seed noise of the first layout on both testbeds, and over
# both together; f16-semvae, smaller still, lost a little over the two together). A set
# without REPA targets has none to compress: its default keeps only the 16-bit posteriors.
DEFAULT_STORE = "f16-pca16"
DEFAULT_STORE_WITHOUT_REPA = "f16"


def default_storage(repa: bool, settings_file: Path) -> Storage:
    """The storage of an extraction given no ``--store``: what an unfinished or finished
    extraction into the same directory recorded (``settings_file``; none recorded: the first
    layout), so that a rerun resumes it as it was begun; else :data:`DEFAULT_STORE` (with REPA
    targets) or :data:`DEFAULT_STORE_WITHOUT_REPA`."""
    if settings_file.is_file():
        try:
            recorded = json.loads(settings_file.read_text()).get("storage")
        except (OSError, ValueError, AttributeError):
            recorded = None  # the claim itself names a broken settings file
        if recorded is None:
            return FIRST_LAYOUT
        if isinstance(recorded, dict) and isinstance(recorded.get("spec"), str):
            return Storage.parse(recorded["spec"])
    return Storage.parse(DEFAULT_STORE if repa else DEFAULT_STORE_WITHOUT_REPA)


@dataclass(frozen=True)
class Shapes:
    """Per-image shapes of a latent set, for sizes: channels, grid, REPA dim and grid, views."""

    tex_channels: int
    sem_channels: int
    size: int
    repa_dim: int
    repa_size: int
    views: int = 2


# the paper's ImageNet 256 set: SD-VAE 32 + SemVAE 16 channels on 16x16, DINOv2-B 768 x 16x16
PAPER_SHAPES = Shapes(tex_channels=32, sem_channels=16, size=16, repa_dim=768, repa_size=16)


def bytes_per_image(storage: Storage, shapes: Shapes) -> dict[str, int]:
    """Stored bytes per image (label, posteriors, REPA targets, total), tensor payload only."""
    s = shapes
    half = 2 if storage.posterior_dtype == "float16" else 4
    posterior = 2 * s.views * (s.tex_channels + s.sem_channels) * s.size**2 * half
    per_view = {"full": s.repa_dim, "pca": storage.pca_components, "semvae": 0}[storage.repa]
    repa = storage.repa_views(s.views) * per_view * s.repa_size**2 * 2
    return {"label": 8, "posterior": posterior, "repa": repa, "total": 8 + posterior + repa}


def encode_posterior(
    mean: torch.Tensor, std: torch.Tensor, storage: Storage, name: str
) -> dict[str, torch.Tensor]:
    """``{name_mean, name_std | name_logvar}`` as ``storage`` stores them; a value that half
    precision cannot hold is refused (use ``f32``)."""
    if storage.posterior == "float32":
        return {f"{name}_mean": mean.float(), f"{name}_std": std.float()}
    second = 2.0 * torch.log(std.float()) if storage.std_key == "logvar" else std.float()
    out = {f"{name}_mean": mean.float().half(), f"{name}_{storage.std_key}": second.half()}
    for key, value in out.items():
        bad = torch.isinf(value) & ~torch.isinf(mean if key.endswith("mean") else second)
        if bool(bad.any()):
            raise ValueError(f"{key} exceeds the float16 range; store this set with f32")
    return out


def stored_std(shard: Any, name: str, storage: Storage, index: Any = slice(None)) -> torch.Tensor:
    """The posterior std of part ``name`` (``tex`` / ``sem``) in float32, from what is stored
    (half to float in torch, which vectorises it)."""
    stored = shard[f"{name}_{storage.std_key}"][index]
    if not (stored.flags.writeable and stored.flags.c_contiguous):
        stored = np.array(stored)  # a whole memmap, or a strided view of one
    stored = torch.from_numpy(stored)
    if storage.std_key == "logvar":
        return torch.exp(0.5 * stored.float())
    return stored.float()


def encode_repa(
    features: torch.Tensor, storage: Storage, pca: dict[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """The stored form of REPA targets (N, V, D, h, w): ``{repa: fp16}``, ``{repa_pca: fp16
    codes}`` or nothing (``semvae``), with view 0 only when the flip is derived."""
    if storage.repa == "semvae":
        return {}
    feats = features[:, :1] if storage.flip == "derived" else features
    if storage.repa == "full":
        return {"repa": feats.half()}
    if pca is None:
        raise ValueError("REPA storage 'pca' needs the PCA (mean, components)")
    centred = feats.float() - pca["mean"].view(1, 1, -1, 1, 1)
    codes = torch.einsum("kd,nvdhw->nvkhw", pca["components"], centred)
    return {"repa_pca": codes.half()}


def check_pca_file(directory: Path, record: dict, repa_dim: int, k: int) -> dict[str, np.ndarray]:
    """The stored PCA of a ``pca`` set, checked: present, tensors ``mean`` (D,) and
    ``components`` (K, D); one line naming the file otherwise."""
    name = record.get("file")
    path = Path(directory) / PCA_FILE
    if name != PCA_FILE:
        raise BadInputError(f"{directory}/meta.json: the PCA file must be {PCA_FILE}; got {name!r}")
    if not path.is_file():
        raise BadInputError(
            f"{path} is missing: this latent set stores REPA targets as PCA codes and needs it"
        )
    if record.get("sha256") not in (None, sha256_file(path)):
        raise BadInputError(f"{path} does not match the sha256 in meta.json: changed or corrupt")
    pca = MappedShard(path)
    want = {"mean": (repa_dim,), "components": (k, repa_dim)}
    got = {key: tuple(pca[key].shape) if key in pca else None for key in want}
    if got != want:
        raise BadInputError(f"{path}: expected tensors {want} (float32); got {got}")
    return {key: np.array(pca[key], dtype=np.float32) for key in want}  # copies


def semvae_repa_dim(directory: Path) -> int:
    """The feature dim of the SemVAE copied into a ``semvae`` set (its decoder's output); one
    line naming the directory if it is missing or unreadable."""
    path = Path(directory) / SEMVAE_DIR
    try:
        config = json.loads((path / "semvae.json").read_text())["config"]
        dim = int(config["in_dim"])
    except (OSError, ValueError, KeyError, TypeError):
        dim = 0
    if dim < 1 or not (path / "semvae.safetensors").is_file():
        raise BadInputError(
            f"{path} is missing or not a SemVAE (semvae.json, semvae.safetensors): this latent "
            f"set's REPA targets are the SemVAE decoder's reconstructions and need it"
        )
    return dim
