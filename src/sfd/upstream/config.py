"""Import checkpoints of the official SFD release (a LightningDiT fork, MIT).

The release's ``LightningDiT`` uses the same module names as :class:`sfd.model.LightningDiT`,
so weights map one to one (a DDP ``module.`` prefix is stripped). What differs is how the model
is described: the release's YAML configs (``model.model_type: LightningDiT-XL/1``, ``in_chans``,
``semantic_chans``, ``repa_dino_version`` ...) or its ``LightningDiT(...)`` constructor
arguments. This module turns either into an :class:`sfd.config.Config`.

Release quirks handled here: ``num_sampling_steps`` counts grid points (sfd counts steps);
``semfirst_infer_interval_mode`` picks which parts the CFG interval applies to; the frozen
``pos_embed`` is taken from the checkpoint (the release's EMA touches it).

A release YAML's ``sample`` section becomes the imported checkpoint's sampling settings, with
the release's stage-boundary rule (``sample.boundary="release"``), so ``sfd sample IMPORTED``
reproduces the release's sampler (docs/METHOD.md §5.1). The release reads the guidance scale from
its ``CFG_SCALE`` environment variable and applies AutoGuidance only if it exceeds 1, while its
YAMLs say ``cfg_scale: 1.0`` next to ``autoguidance: true``; here that scale is given at import
(``cfg_scale``), and a YAML that names a guide without a scale is an error, not a no-op.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import yaml

from sfd.config import Config, FlowConfig, LatentConfig, ModelConfig, SampleConfig
from sfd.errors import (
    ConfigError,
    SfdError,
    one_line,
)
from sfd.flow.solvers import SOLVERS

log = logging.getLogger("sfd.upstream")

# model_type -> (depth, hidden_size, num_heads); the suffix /p is the patch size.
MODEL_TYPES = {
    "S": (12, 384, 6),
    "B": (12, 768, 12),
    "L": (24, 1024, 16),
    "XL": (28, 1152, 16),
    "XXL": (24, 1536, 24),
    "1p0B": (24, 1536, 24),
}
# REPA target dimension of the DINOv2 variant named by repa_dino_version.
DINO_DIMS = {"vits14": 384, "vitb14": 768, "vitl14": 1024, "vitg14": 1536}


def parse_model_type(name: str) -> dict[str, int]:
    """'LightningDiT-XL/1' -> depth, hidden_size, num_heads, patch_size."""
    try:
        family, size_patch = name.split("-", 1)
        size, patch = size_patch.split("/")
        depth, width, heads = MODEL_TYPES[size]
        return {"depth": depth, "hidden_size": width, "num_heads": heads, "patch_size": int(patch)}
    except (ValueError, KeyError):
        raise ValueError(
            f"unknown release model_type {name!r}; expected e.g. 'LightningDiT-XL/1' "
            f"with a size in {sorted(MODEL_TYPES)}"
        ) from None


def dino_dim(version: str) -> int:
    for key, dim in DINO_DIMS.items():
        if key in version:
            return dim
    raise ValueError(
        f"unknown repa_dino_version {version!r}; expected a DINOv2 name containing "
        f"one of {sorted(DINO_DIMS)}"
    )


def config_from_kwargs(kwargs: dict[str, Any], transport: dict[str, Any] | None = None) -> Config:
    """A :class:`Config` from the release's ``LightningDiT(...)`` (+ ``create_transport``) args."""
    for key, bad in (("learn_sigma", True), ("wo_shift", True)):
        if kwargs.get(key, False) == bad:
            raise ValueError(f"release option {key}={bad} is not supported by sfd")
    sem = int(kwargs.get("semantic_chans", 0))
    in_ch = int(kwargs["in_channels"])
    delta_t = float(kwargs.get("semfirst_delta_t") or 0.0)
    use_repa = bool(kwargs.get("use_repa", False))
    model = ModelConfig(
        depth=int(kwargs["depth"]),
        width=int(kwargs["hidden_size"]),
        num_heads=int(kwargs["num_heads"]),
        mlp_ratio=float(kwargs.get("mlp_ratio", 4.0)),
        patch_size=int(kwargs.get("patch_size", 1)),
        num_classes=int(kwargs["num_classes"]),
        class_dropout_prob=float(kwargs.get("class_dropout_prob", 0.1)),
        dual_timestep=delta_t > 0,
        use_qknorm=bool(kwargs.get("use_qknorm", True)),
        use_swiglu=bool(kwargs.get("use_swiglu", True)),
        use_rope=bool(kwargs.get("use_rope", True)),
        use_rmsnorm=bool(kwargs.get("use_rmsnorm", True)),
        repa_depth=int(kwargs.get("repa_depth", 2)),
        repa_projector_dim=int(kwargs.get("repa_projector_dim", 2048)),
        repa_dim=dino_dim(kwargs.get("repa_dino_version", "dinov2_vitb14")) if use_repa else 0,
    )
    latent = LatentConfig(
        tex_channels=in_ch - sem, sem_channels=sem, size=int(kwargs["input_size"])
    )
    t = transport or {}
    flow = FlowConfig(
        delta_t=delta_t,
        time_dist="logit_normal" if t.get("use_lognorm", True) else "uniform",
        sem_weight=float(t.get("semantic_weight", 1.0 if transport else 2.0)),
        cos_weight=1.0 if t.get("use_cosine_loss", True) else 0.0,
        repa_weight=float(t.get("repa_weight", 1.0)),
        repa_mode=t.get("repa_mode", "cos"),
    )
    return Config(model=model, latent=latent, flow=flow, preset="upstream")


def interval_for_mode(start: float, mode: str) -> tuple[tuple[float, float], tuple[float, float]]:
    """Release ``cfg_interval_start`` + ``semfirst_infer_interval_mode`` -> per-part intervals."""
    if mode not in ("both", "tex", "sem"):
        raise ValueError(f"semfirst_infer_interval_mode must be both/tex/sem; got {mode!r}")
    on, off = (float(start), 1.0), (0.0, 1.0)
    return (on if mode in ("both", "tex") else off), (on if mode in ("both", "sem") else off)


def config_from_yaml(
    data: dict[str, Any], cfg_scale: float | None = None, sampling: bool = True
) -> Config:
    """A :class:`Config` from one of the release's YAML training/inference configs.

    ``sampling``: take the YAML's ``sample`` section (else sfd's defaults); ``cfg_scale``
    replaces its ``cfg_scale`` (the release's ``CFG_SCALE`` environment variable).
    """
    try:
        m, d = data["model"], data["data"]
        arch = parse_model_type(m["model_type"])
        kwargs = {
            **arch,
            "in_channels": m["in_chans"],
            "semantic_chans": m.get("semantic_chans", 0),
            "input_size": d["image_size"] // data["vae"]["downsample_ratio"],
            "num_classes": d["num_classes"],
            "semfirst_delta_t": m.get("semfirst_delta_t", 0.0),
            "use_repa": m.get("use_repa", False),
            "repa_dino_version": m.get("repa_dino_version", "dinov2_vitb14"),
            "repa_depth": m.get("repa_feat_depth", 2),
            **{
                k: m[k]
                for k in (
                    "use_qknorm",
                    "use_swiglu",
                    "use_rope",
                    "use_rmsnorm",
                    "wo_shift",
                    "learn_sigma",
                )
                if k in m
            },
        }
    except KeyError as err:
        raise ValueError(f"release YAML config is missing the key {err}") from None
    tr = data.get("transport", {})
    transport = {
        "semantic_weight": m.get("semantic_weight", 1.0),
        "use_lognorm": tr.get("use_lognorm", True),
        "use_cosine_loss": tr.get("use_cosine_loss", True),
        "repa_weight": m.get("repa_weight", 1.0),
        "repa_mode": m.get("repa_mode", "cos"),
    }
    cfg = config_from_kwargs(kwargs, transport)
    if not sampling:
        return cfg
    return dataclasses.replace(cfg, sample=sample_from_yaml(data, cfg_scale))


def sample_from_yaml(
    data: dict[str, Any], cfg_scale: float | None = None, where: str = "the release YAML"
) -> SampleConfig:
    """The sampler of a release YAML (its ``sample`` section), with the release's boundary rule.

    ``cfg_scale`` replaces the YAML's ``cfg_scale``. With ``autoguidance: true`` the scale must
    differ from 1 (the release's YAMLs leave it at 1.0 and read ``CFG_SCALE``).
    """
    s, m = data.get("sample") or {}, data.get("model") or {}
    method = s.get("sampling_method", "dopri5")
    if method not in SOLVERS:
        raise ValueError(
            f"release sampling_method {method!r} is not supported; sfd's solvers: "
            f"{', '.join(SOLVERS)}"
        )
    scale = float(s.get("cfg_scale", 1.0) if cfg_scale is None else cfg_scale)
    if s.get("autoguidance") and scale == 1.0:
        raise ValueError(
            f"{where} enables AutoGuidance (autoguidance: true) with cfg_scale 1.0, which the "
            f"release replaces by its CFG_SCALE variable: give --cfg-scale (docs/METHOD.md §5.1: "
            f"1.5; 1.6 for SFD-XL 80 epochs)"
        )
    tex_iv, sem_iv = interval_for_mode(
        s.get("cfg_interval_start", 0.0) or 0.0, m.get("semfirst_infer_interval_mode", "both")
    )
    return SampleConfig(
        method=method,
        num_steps=max(int(s.get("num_sampling_steps", 250)) - 1, 1),
        boundary="release",
        atol=float(s.get("atol", 1e-6)),
        rtol=float(s.get("rtol", 1e-3)),
        timestep_shift=float(s.get("timestep_shift", 0.0) or 0.0),
        cfg_scale_tex=scale,
        cfg_scale_sem=scale,
        cfg_interval_tex=tex_iv,
        cfg_interval_sem=sem_iv,
        guide="autoguidance" if s.get("autoguidance") else "cfg",
    )


def read_upstream_config(
    path: str | Path, cfg_scale: float | None = None, sampling: bool = True
) -> Config:
    """Config from a release YAML, or a JSON of constructor args (``model_kwargs`` inside).

    A YAML's ``sample`` section gives the sampling settings (``sampling=False``: sfd's defaults);
    ``cfg_scale`` replaces its ``cfg_scale``. A JSON carries no sampling settings.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"upstream config {path} does not exist")
    try:
        return _read_upstream_config(path, cfg_scale, sampling)
    except SfdError:
        raise
    except KeyError as err:
        raise ConfigError(f"upstream config {path} lacks the key {err}") from None
    except (ValueError, TypeError, AttributeError, yaml.YAMLError, UnicodeDecodeError) as err:
        first = one_line(str(err)) or type(err).__name__
        if str(path) in first:
            raise ConfigError(first) from None
        raise ConfigError(f"upstream config {path} cannot be read: {first}") from None


def _read_upstream_config(path: Path, cfg_scale: float | None, sampling: bool) -> Config:
    text = path.read_text()
    if path.suffix == ".json":
        if cfg_scale is not None and sampling:
            raise ValueError(
                f"{path} is a JSON of constructor arguments without sampling settings; a "
                f"guidance scale applies to a release inference YAML (--inference-config)"
            )
        data = json.loads(text)
        kwargs = data.get("model_kwargs", data)
        return config_from_kwargs(kwargs, data.get("create_transport_kwargs"))
    data = yaml.safe_load(text)
    if not isinstance(data, dict) or "model" not in data:
        raise ValueError(
            f"{path} is neither a release YAML config (with a 'model' section) nor "
            f"a JSON of LightningDiT constructor arguments"
        )
    return config_from_yaml(data, cfg_scale, sampling)


def read_inference_config(
    path: str | Path, cfg: Config, cfg_scale: float | None = None
) -> SampleConfig:
    """The sampler of a release inference YAML for the model ``cfg`` describes.

    What the YAML says about the model (``model_type``, ``in_chans``, ``semantic_chans``,
    ``semfirst_delta_t``, ``data.num_classes``) must agree with ``cfg`` where it is given.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"inference config {path} does not exist")
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict) or "sample" not in data:
        raise ValueError(f"{path} has no 'sample' section (a release inference YAML has one)")
    m, d = data.get("model") or {}, data.get("data") or {}
    given = {
        "model.in_chans": (m.get("in_chans"), cfg.latent.channels),
        "model.semantic_chans": (m.get("semantic_chans"), cfg.latent.sem_channels),
        "model.semfirst_delta_t": (m.get("semfirst_delta_t"), cfg.flow.delta_t),
        "data.num_classes": (d.get("num_classes"), cfg.model.num_classes),
    }
    if "model_type" in m:
        arch = parse_model_type(m["model_type"])
        mine = (cfg.model.depth, cfg.model.width, cfg.model.num_heads, cfg.model.patch_size)
        given["model.model_type"] = (tuple(arch.values()), mine)
    for key, (value, model_value) in given.items():
        if value is not None and value != model_value:
            raise ValueError(f"{path}: {key} is {value!r} but the model has {model_value!r}")
    return sample_from_yaml(data, cfg_scale, where=str(path))
