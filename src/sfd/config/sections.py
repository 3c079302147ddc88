"""The sections of a run's config (frozen dataclasses) and :class:`Config`, which holds them.

Training defaults are the release's recipe (docs/METHOD.md §3): AdamW lr 1e-4, betas (0.9, 0.999),
no
weight decay, EMA 0.9999, global batch 256, Δt = 0.3, β = 2.0, REPA weight 1.0 on block 2.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from sfd.config.typed import from_dict
from sfd.errors import ConfigError
from sfd.flow.schedule import BOUNDARY_RULES
from sfd.flow.solvers import SOLVERS


@dataclass(frozen=True)
class ModelConfig:
    """The LightningDiT backbone with dual timestep conditioning (docs/METHOD.md §2.5-2.8)."""

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
    """The composite latent c = [z, s]: texture channels first, semantic last (docs/METHOD.md
    §1)."""

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
    """Asynchronous flow matching (docs/METHOD.md §3)."""

    delta_t: float = 0.3
    time_dist: Literal["logit_normal", "uniform"] = "logit_normal"
    sem_weight: float = 2.0  # β on the semantic squared errors
    cos_weight: float = 1.0
    repa_weight: float = 1.0
    repa_mode: Literal["cos", "mse", "cos_mse"] = "cos"
    mask_clamped: bool = False  # drop the semantic target where t_sem = 1 (off = release)
    # A learned schedule (docs/SCHEDULE.md): the progress of the texture, then of the semantics,
    # at M + 1 evenly spaced generation times, each row rising from 0 to 1. Empty: SFD's offset
    # by delta_t. schedule_file names a file of `sfd learn-schedule` that fills it when a run
    # is configured (checkpoints carry the numbers, not the file).
    schedule: tuple[float, ...] = ()
    schedule_file: str = ""

    def __post_init__(self) -> None:
        _check(0.0 <= self.delta_t <= 1.0, "flow.delta_t", "a number in [0, 1]", self.delta_t)
        problem = progress_table_problem(self.schedule) if self.schedule else None
        if problem is not None:
            raise ConfigError(f"flow.schedule is not a progress table: {problem}")
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


# the solver registry's names and the schedule's boundary rules (docs/ARCHITECTURE.md)
SolverName = Literal[tuple(SOLVERS)]
BoundaryRule = Literal[BOUNDARY_RULES]


@dataclass(frozen=True)
class SampleConfig:
    """The three-stage sampler and guidance (docs/METHOD.md §4-5)."""

    method: SolverName = "dopri5"  # the release's sampler
    num_steps: int = 24  # solver steps (intervals) of a fixed-step solver; dopri5 adapts its own
    boundary: BoundaryRule = "exact"  # stage-boundary rule (flow/schedule.py)
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
        _check(self.method in SOLVERS, "sample.method", _one_of(SOLVERS), self.method)
        _check(self.num_steps >= 1, "sample.num_steps", "an integer >= 1", self.num_steps)
        _check(
            self.compute_batch >= 1, "sample.compute_batch", "an integer >= 1", self.compute_batch
        )
        _check(
            self.boundary in BOUNDARY_RULES,
            "sample.boundary",
            _one_of(BOUNDARY_RULES),
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
            _check(
                not self.flow.schedule,
                "flow.schedule",
                "empty for a texture-only latent (latent.sem_channels=0)",
                "a learned schedule",
            )
        if self.flow.schedule:  # both parts' progress values reach the model
            _check(
                self.model.dual_timestep,
                "model.dual_timestep",
                "true with a learned schedule (flow.schedule)",
                self.model.dual_timestep,
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        return from_dict(cls, data, prefix="")


def progress_table_problem(values) -> str | None:
    """What is wrong with a flattened (2, M + 1) progress table (texture row, semantic row), or
    None: each row must start at 0, end at 1 and never decrease, with M >= 1."""
    values = [float(v) for v in values]
    if len(values) < 4 or len(values) % 2:
        return f"an even number >= 4 of values (2 rows of M + 1); got {len(values)}"
    half = len(values) // 2
    for name, row in (("texture", values[:half]), ("semantic", values[half:])):
        if not all(v == v and abs(v) != float("inf") for v in row):
            return f"the {name} row has a value that is not finite"
        if row[0] != 0.0 or row[-1] != 1.0:
            return f"the {name} row must run from 0 to 1; it runs from {row[0]} to {row[-1]}"
        drops = [j for j in range(1, half) if row[j] < row[j - 1]]
        if drops:
            j = drops[0]
            return (
                f"the {name} row decreases at knot {j} ({row[j - 1]} -> {row[j]}): "
                f"a progress curve must be monotone"
            )
    return None


def _one_of(names) -> str:
    return "one of " + ", ".join(repr(n) for n in names)


def _check(ok: bool, name: str, expected: str, got: Any) -> None:
    if not ok:
        raise ConfigError(f"{name} must be {expected}; got {got!r}")
