"""Configuration: frozen dataclasses, named presets and typed ``key=value`` overrides.

Presets follow METHOD.md §2.5 (LightningDiT widths/depths/heads, as in Pan et al. 2026 and
Yao et al. 2025, "Reconstruction vs. Generation", LightningDiT). Training defaults are the
release's recipe (METHOD.md §3): AdamW lr 1e-4, betas (0.9, 0.999), no weight decay, EMA
0.9999, global batch 256, Δt = 0.3, β = 2.0, REPA weight 1.0 on block 2.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sfd.errors import ConfigError


@dataclass(frozen=True)
class ModelConfig:
    """The LightningDiT backbone with dual timestep conditioning (METHOD.md §2.5-2.8)."""

    depth: int = 12
    width: int = 384
    num_heads: int = 6
    mlp_ratio: float = 4.0
    patch_size: int = 1
    num_classes: int = 1000
    class_dropout_prob: float = 0.1
    dual_timestep: bool = True  # two half-width embedders; False: one full-width (Δt = 0)
    use_qknorm: bool = True
    use_swiglu: bool = True
    use_rope: bool = True
    use_rmsnorm: bool = True
    repa_depth: int = 2  # 1-indexed block whose output tokens feed the REPA projector
    repa_projector_dim: int = 2048
    repa_dim: int = 768  # channels of the REPA target features; 0 disables the projector

    def __post_init__(self) -> None:
        _check(self.depth >= 1, "model.depth", "an integer >= 1", self.depth)
        _check(self.width >= 1, "model.width", "an integer >= 1", self.width)
        _check(self.num_heads >= 1, "model.num_heads", "an integer >= 1", self.num_heads)
        _check(self.patch_size >= 1, "model.patch_size", "an integer >= 1", self.patch_size)
        _check(self.mlp_ratio > 0, "model.mlp_ratio", "a number > 0", self.mlp_ratio)
        _check(self.repa_dim >= 0, "model.repa_dim", "an integer >= 0", self.repa_dim)
        _check(
            self.repa_projector_dim >= 1,
            "model.repa_projector_dim",
            "an integer >= 1",
            self.repa_projector_dim,
        )
        _check(
            self.width % self.num_heads == 0,
            "model.width",
            f"a multiple of model.num_heads={self.num_heads}",
            self.width,
        )
        head_dim = self.width // self.num_heads
        if self.use_rope:
            _check(
                head_dim % 4 == 0,
                "model.width / model.num_heads",
                "a head dimension divisible by 4 (2D RoPE)",
                head_dim,
            )
        if self.dual_timestep:
            _check(
                self.width % 2 == 0, "model.width", "even (two half-width embedders)", self.width
            )
        _check(self.num_classes >= 1, "model.num_classes", "an integer >= 1", self.num_classes)
        _check(
            0.0 <= self.class_dropout_prob < 1.0,
            "model.class_dropout_prob",
            "in [0, 1)",
            self.class_dropout_prob,
        )
        if self.repa_dim > 0:
            _check(
                1 <= self.repa_depth <= self.depth,
                "model.repa_depth",
                f"in [1, model.depth={self.depth}] (1-indexed)",
                self.repa_depth,
            )


@dataclass(frozen=True)
class LatentConfig:
    """The composite latent c = [z, s]: texture channels first, semantic last (METHOD.md §1)."""

    tex_channels: int = 32
    sem_channels: int = 16
    size: int = 16  # H = W of the latent grid
    texture_autoencoder: str = ""  # path of the pixel decoder (sfd sample --decoder overrides)

    def __post_init__(self) -> None:
        _check(self.tex_channels >= 1, "latent.tex_channels", "an integer >= 1", self.tex_channels)
        _check(self.sem_channels >= 0, "latent.sem_channels", "an integer >= 0", self.sem_channels)
        _check(self.size >= 1, "latent.size", "an integer >= 1", self.size)

    @property
    def channels(self) -> int:
        return self.tex_channels + self.sem_channels


@dataclass(frozen=True)
class FlowConfig:
    """Asynchronous flow matching (METHOD.md §3)."""

    delta_t: float = 0.3
    time_dist: Literal["logit_normal", "uniform"] = "logit_normal"
    sem_weight: float = 2.0  # β on the semantic squared errors
    cos_weight: float = 1.0
    repa_weight: float = 1.0
    repa_mode: Literal["cos", "mse", "cos_mse"] = "cos"
    mask_clamped: bool = False  # drop the semantic target where t_sem = 1 (off = release)

    def __post_init__(self) -> None:
        _check(0.0 <= self.delta_t <= 1.0, "flow.delta_t", "a number in [0, 1]", self.delta_t)
        _check(
            self.time_dist in ("logit_normal", "uniform"),
            "flow.time_dist",
            "'logit_normal' or 'uniform'",
            self.time_dist,
        )
        _check(
            self.repa_mode in ("cos", "mse", "cos_mse"),
            "flow.repa_mode",
            "'cos', 'mse' or 'cos_mse'",
            self.repa_mode,
        )
        for name in ("sem_weight", "cos_weight", "repa_weight"):
            _check(getattr(self, name) >= 0, f"flow.{name}", "a number >= 0", getattr(self, name))


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, EMA, precision, reproducibility and logging."""

    global_batch_size: int = 256
    grad_accum_steps: int = 1
    total_steps: int = 400_000
    lr: float = 1e-4
    beta1: float = 0.9
    beta2: float = 0.999
    weight_decay: float = 0.0
    grad_clip: float = 0.0  # 0 disables clipping (release)
    ema_decay: float = 0.9999
    seed: int = 0
    precision: Literal["fp32", "bf16"] = "fp32"
    parallel: Literal["ddp", "fsdp"] = "ddp"  # data parallelism under torchrun (DISTRIBUTED.md)
    compile: bool = False
    # What train.compile compiles: "blocks" (each transformer block in place) or "loss" (the
    # forward + loss of a micro-batch as one region: ~1.07x faster than blocks on the demo on
    # CPU, about twice the compile time; docs/PERFORMANCE.md).
    compile_scope: Literal["blocks", "loss"] = "blocks"
    activation_checkpointing: bool = False
    fused_adamw: bool = True  # fused AdamW kernel (CPU and CUDA); false: torch's for-loop
    sample_posterior: bool = True  # draw latents from the stored posterior, else use its mean
    hflip: bool = True  # use the stored flipped latents half of the time
    skip_nonfinite: bool = True  # skip an update whose loss or gradient is not finite
    # a loss above spike_factor x the median of the last spike_window losses is a spike: its
    # update is skipped; with spike_rollback, training returns to the last checkpoint and skips
    # the batches up to the spike (at most max_rollbacks times, then it stops). 0: off
    spike_factor: float = 0.0
    spike_window: int = 50
    spike_rollback: bool = False
    max_rollbacks: int = 3
    log_every: int = 50
    logger: Literal["tensorboard", "wandb", "none"] = "tensorboard"  # mirrors RUN/log.jsonl
    ckpt_every: int = 5000
    keep_last: int = 0  # keep only the newest N checkpoints; 0 keeps all
    num_workers: int = 1  # loader threads, each one step ahead of training (0 acts as 1)

    def __post_init__(self) -> None:
        _check(
            self.global_batch_size >= 1,
            "train.global_batch_size",
            "an integer >= 1",
            self.global_batch_size,
        )
        _check(
            self.grad_accum_steps >= 1,
            "train.grad_accum_steps",
            "an integer >= 1",
            self.grad_accum_steps,
        )
        _check(
            self.global_batch_size % self.grad_accum_steps == 0,
            "train.global_batch_size",
            f"divisible by train.grad_accum_steps={self.grad_accum_steps}",
            self.global_batch_size,
        )
        _check(self.total_steps >= 0, "train.total_steps", "an integer >= 0", self.total_steps)
        _check(self.lr > 0, "train.lr", "a number > 0", self.lr)
        for name in ("beta1", "beta2"):
            value = getattr(self, name)
            _check(0.0 <= value < 1.0, f"train.{name}", "in [0, 1)", value)
        _check(self.weight_decay >= 0, "train.weight_decay", "a number >= 0", self.weight_decay)
        _check(self.grad_clip >= 0, "train.grad_clip", "a number >= 0 (0: off)", self.grad_clip)
        _check(0.0 <= self.ema_decay <= 1.0, "train.ema_decay", "in [0, 1]", self.ema_decay)
        _check(
            self.precision in ("fp32", "bf16"),
            "train.precision",
            "'fp32' or 'bf16'",
            self.precision,
        )
        _check(
            self.compile_scope in ("blocks", "loss"),
            "train.compile_scope",
            "'blocks' or 'loss'",
            self.compile_scope,
        )
        _check(self.parallel in ("ddp", "fsdp"), "train.parallel", "'ddp' or 'fsdp'", self.parallel)
        _check(self.log_every >= 1, "train.log_every", "an integer >= 1", self.log_every)
        _check(
            self.logger in ("tensorboard", "wandb", "none"),
            "train.logger",
            "'tensorboard', 'wandb' or 'none'",
            self.logger,
        )
        _check(self.ckpt_every >= 1, "train.ckpt_every", "an integer >= 1", self.ckpt_every)
        _check(self.keep_last >= 0, "train.keep_last", "an integer >= 0", self.keep_last)
        _check(self.num_workers >= 0, "train.num_workers", "an integer >= 0", self.num_workers)
        _check(
            self.spike_factor == 0 or self.spike_factor > 1,
            "train.spike_factor",
            "0 (off) or a number > 1",
            self.spike_factor,
        )
        _check(self.spike_window >= 2, "train.spike_window", "an integer >= 2", self.spike_window)
        _check(
            self.max_rollbacks >= 0, "train.max_rollbacks", "an integer >= 0", self.max_rollbacks
        )


@dataclass(frozen=True)
class SampleConfig:
    """The three-stage sampler and guidance (METHOD.md §4-5)."""

    method: Literal["euler", "heun", "dopri5"] = "dopri5"  # the release's sampler
    num_steps: int = 24  # solver steps (intervals) of euler/heun; dopri5 adapts its own
    boundary: Literal["exact", "release"] = "exact"  # stage-boundary rule (flow/schedule.py)
    compute_batch: int = 16  # images solved together; an image depends on (index, this)
    atol: float = 1e-6
    rtol: float = 1e-3
    timestep_shift: float = 0.0  # 0 disables the shift
    cfg_scale_tex: float = 1.0
    cfg_scale_sem: float = 1.0
    cfg_interval_tex: tuple[float, float] = (0.0, 1.0)
    cfg_interval_sem: tuple[float, float] = (0.0, 1.0)
    guide: Literal["cfg", "autoguidance"] = "cfg"

    def __post_init__(self) -> None:
        _check(
            self.method in ("euler", "heun", "dopri5"),
            "sample.method",
            "'euler', 'heun' or 'dopri5'",
            self.method,
        )
        _check(self.num_steps >= 1, "sample.num_steps", "an integer >= 1", self.num_steps)
        _check(
            self.compute_batch >= 1, "sample.compute_batch", "an integer >= 1", self.compute_batch
        )
        _check(
            self.boundary in ("exact", "release"),
            "sample.boundary",
            "'exact' or 'release'",
            self.boundary,
        )
        _check(
            self.timestep_shift >= 0, "sample.timestep_shift", "a number >= 0", self.timestep_shift
        )
        _check(self.atol > 0, "sample.atol", "a number > 0", self.atol)
        _check(self.rtol > 0, "sample.rtol", "a number > 0", self.rtol)
        for name in ("cfg_interval_tex", "cfg_interval_sem"):
            lo, hi = getattr(self, name)
            _check(0.0 <= lo <= hi <= 1.0, f"sample.{name}", "lo <= hi within [0, 1]", (lo, hi))


@dataclass(frozen=True)
class Config:
    """Everything that defines a run. Stored with every run directory and checkpoint."""

    model: ModelConfig = field(default_factory=ModelConfig)
    latent: LatentConfig = field(default_factory=LatentConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    preset: str = "custom"

    def __post_init__(self) -> None:
        # A texture-only latent has nothing to lead: with Δt > 0 the first Δt / (1 + Δt) of
        # every sampling path would move no channel at all.
        if self.latent.sem_channels == 0:
            _check(
                self.flow.delta_t == 0,
                "flow.delta_t",
                "0 for a texture-only latent (latent.sem_channels=0)",
                self.flow.delta_t,
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        return _from_dict(cls, data, prefix="")


def _check(ok: bool, name: str, expected: str, got: Any) -> None:
    if not ok:
        raise ConfigError(f"{name} must be {expected}; got {got!r}")


def load_config_file(path: str | Path) -> Config:
    """A config JSON file (``sfd train --dry-run`` output, a run's ``config.json``), checked
    like ``--set``: wrong types, unknown keys and bad values are errors naming the file and
    the key. Keys left out keep their defaults."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"config file {path} cannot be read: {err}") from None
    except json.JSONDecodeError as err:
        raise ConfigError(
            f"config file {path} is not valid JSON (line {err.lineno}, column {err.colno}: "
            f"{err.msg})"
        ) from None
    try:
        return Config.from_dict(data)
    except ConfigError as err:
        raise ConfigError(f"config file {path}: {err}") from None


# --------------------------------------------------------------------------------------------
# Presets (METHOD.md §2.5). Parameter counts at 48 input channels: S ~33M, B 130M, L 458M,
# XL 675M, XXL 1.03B. `tiny` is for tests: seconds on a CPU.

_BACKBONES: dict[str, dict[str, Any]] = {
    "tiny": dict(depth=2, width=64, num_heads=2, repa_projector_dim=64),
    "demo": dict(depth=6, width=256, num_heads=4, patch_size=2, repa_projector_dim=256),
    "S": dict(depth=12, width=384, num_heads=6),
    "B": dict(depth=12, width=768, num_heads=12),
    "L": dict(depth=24, width=1024, num_heads=16),
    "XL": dict(depth=28, width=1152, num_heads=16),
    "XXL": dict(depth=24, width=1536, num_heads=24),
}

PRESETS: tuple[str, ...] = tuple(_BACKBONES)


def preset(name: str) -> Config:
    """The named preset: backbone size on the ImageNet-256 latent (32 + 16 channels, 16x16).

    ``tiny`` is a small latent (4 + 2 channels on 8x8, 10 classes) so tests run in seconds;
    ``demo`` is the embedded default's model (``sfd demo``, Fashion-MNIST on a CPU).
    """
    if name not in _BACKBONES:
        raise ValueError(f"unknown preset {name!r}; expected one of {', '.join(PRESETS)}")
    model = ModelConfig(**_BACKBONES[name])
    latent = LatentConfig()
    train = TrainConfig()
    if name == "tiny":
        model = dataclasses.replace(model, num_classes=10, repa_depth=1, repa_dim=32)
        latent = LatentConfig(tex_channels=4, sem_channels=2, size=8)
        train = dataclasses.replace(
            train, global_batch_size=16, total_steps=200, log_every=10, ckpt_every=100
        )
    if name == "demo":  # Fashion-MNIST 32 px: 4 texture + 4 semantic channels on 8x8
        model = dataclasses.replace(model, num_classes=10, repa_dim=40)
        latent = LatentConfig(tex_channels=4, sem_channels=4, size=8)
        # A short run: an EMA half-life of ~70 steps (0.999 would still be ~45 % init at 800).
        train = dataclasses.replace(
            train,
            global_batch_size=64,
            total_steps=600,
            lr=1e-3,
            beta2=0.99,
            ema_decay=0.99,
            log_every=25,
            ckpt_every=200,
        )
        # CFG 4: probe accuracy of samples 0.50 at scale 2, 0.58 at 3, 0.61 at 4 (200 samples)
        sample = SampleConfig(
            method="heun", num_steps=10, cfg_scale_tex=4.0, cfg_scale_sem=4.0, compute_batch=50
        )
        return Config(model=model, latent=latent, train=train, sample=sample, preset=name)
    return Config(model=model, latent=latent, train=train, preset=name)


# --------------------------------------------------------------------------------------------
# Typed overrides: "train.lr=2e-4", "flow.delta_t=0", "sample.cfg_interval_tex=0.1,1".


def apply_overrides(cfg: Config, overrides: list[str] | tuple[str, ...]) -> Config:
    """Return ``cfg`` with ``section.key=value`` overrides applied, each parsed to its field type.

    Unknown sections or keys and values that do not parse to the field's type are errors.
    """
    data = cfg.to_dict()
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        path, raw = item.split("=", 1)
        parts = path.strip().split(".")
        if len(parts) != 2:
            raise ConfigError(f"override key {path!r} must be section.key, e.g. train.lr")
        section, key = parts
        sub_cls = _section_class(section)
        fields = {f.name: f for f in dataclasses.fields(sub_cls)}
        if key not in fields:
            raise ConfigError(
                f"unknown key {key!r} in section {section!r}; "
                f"expected one of {', '.join(sorted(fields))}"
            )
        hint = typing.get_type_hints(sub_cls)[key]
        data[section][key] = parse_value(raw.strip(), hint, f"{section}.{key}")
    return Config.from_dict(data)


def _section_class(section: str) -> type:
    hints = typing.get_type_hints(Config)
    if section not in hints or not dataclasses.is_dataclass(hints[section]):
        names = [
            f.name for f in dataclasses.fields(Config) if dataclasses.is_dataclass(hints[f.name])
        ]
        raise ConfigError(f"unknown config section {section!r}; expected one of {', '.join(names)}")
    return hints[section]


def parse_value(raw: str, hint: Any, name: str) -> Any:
    """Parse ``raw`` into the type ``hint`` (bool, int, float, str, Literal, tuple of floats)."""
    origin = typing.get_origin(hint)
    try:
        if hint is bool:
            low = raw.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if hint is int:
            return int(raw)
        if hint is float:
            value = float(raw)
            if not math.isfinite(value):
                raise ValueError
            return value
        if hint is str:
            return raw
        if origin is Literal:
            if raw not in typing.get_args(hint):
                raise ValueError
            return raw
        if origin is tuple:
            args = typing.get_args(hint)
            items = [x for x in raw.strip("()[] ").split(",") if x.strip()]
            if len(items) != len(args):
                raise ValueError
            return tuple(parse_value(x.strip(), a, name) for x, a in zip(items, args, strict=True))
    except ValueError:
        raise ConfigError(f"cannot parse {raw!r} for {name}: expected {_describe(hint)}") from None
    raise TypeError(f"unsupported config type {hint!r} for {name}")


def _describe(hint: Any) -> str:
    if typing.get_origin(hint) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if typing.get_origin(hint) is tuple:
        return "a comma-separated tuple of " + ", ".join(a.__name__ for a in typing.get_args(hint))
    if hint is float:
        return "a finite number"
    return getattr(hint, "__name__", str(hint))


_JSON_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _typed(value: Any, hint: Any, name: str) -> Any:
    """``value`` (parsed JSON) checked against the field type ``hint``, as ``--set`` would."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
        origin = typing.get_origin(hint)
    ok = True
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        ok = ok and math.isfinite(value)
        value = float(value) if ok else value
    elif hint is str:
        ok = isinstance(value, str)
    elif origin is Literal:
        ok = isinstance(value, str) and value in typing.get_args(hint)
    elif origin is tuple:
        args = typing.get_args(hint)
        ok = isinstance(value, list | tuple) and len(value) == len(args)
        if ok:
            return tuple(_typed(v, a, name) for v, a in zip(value, args, strict=True))
    if not ok:
        expected = _JSON_NAMES.get(hint) or _describe(hint)
        if origin is tuple:
            expected = f"a list of {len(typing.get_args(hint))} numbers"
        raise ConfigError(f"{name} must be {expected}; got {value!r}")
    return value


def _from_dict(cls: type, data: dict[str, Any], prefix: str) -> Any:
    where = prefix.rstrip(".") or "the top level"
    if not isinstance(data, dict):
        raise ConfigError(
            f"config section {where} must be a mapping (a JSON object); got {type(data).__name__}"
        )
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        keys = ", ".join(f"{prefix}{k}" for k in unknown)
        raise ConfigError(
            f"unknown config key{'s' if len(unknown) > 1 else ''} {keys}; {where} has "
            f"{', '.join(sorted(names))}"
        )
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _from_dict(hint, value, f"{prefix}{key}.")
        else:
            kwargs[key] = _typed(value, hint, f"{prefix}{key}")
    return cls(**kwargs)
