"""The ablation grid's settings (rows, sizes, seeds, checkpoints, guidance, the sampling-steps
axis; see :mod:`sfd.experiments.ablate`) and the SFD config of each row (the rows themselves:
:mod:`sfd.experiments.ablate_rows`)."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from sfd.config import Config, apply_overrides, preset
from sfd.experiments.ablate_rows import (
    CONTROL_ROWS,
    MAIN_ROWS,
    NFE_ROWS,
    STORE_PREFIX,
    Row,
    is_paired,
    parse_row,
    sweep_rows,
)
from sfd.experiments.demo import DEMO_MODEL
from sfd.flow.solvers import SOLVERS
from sfd.training.run_dir import RESUMABLE_CHANGES

# the sampling-steps axis: the samplers each seed of the axis's rows (ablate_rows.NFE_ROWS and
# every learned variant) is evaluated with at its final checkpoint; "heun-10" is the curves' own
NFE_SAMPLERS = ("euler-4", "euler-8", "euler-16", "euler-32", "heun-10", "dopri5")
GRID_MODEL = DEMO_MODEL  # the demo's backbone (sfd.experiments.demo)


# --------------------------------------------------------------------------------------------
# Settings


@dataclass(frozen=True)
class AblationSettings:
    """The grid: rows, seeds, training length, checkpoints and the evaluation protocol."""

    rows: tuple[str, ...] = MAIN_ROWS + CONTROL_ROWS + sweep_rows()
    main_seeds: int = 3  # training seeds of the main rows
    sweep_seeds: int = 1  # training seeds of every other row
    steps: int = 1000
    checkpoints: int = 5  # evaluated checkpoints, evenly spaced; the last is `steps`
    num_samples: int = 1000  # per evaluation, balanced classes
    sample_seed: int = 0  # per-image sampling seeds: identical for every row and checkpoint
    method: str = "heun"
    num_steps: int = 10
    cfg_scale: float = 1.0  # the curves: the paper's ablation is without guidance
    cfg_sweep: tuple[float, ...] = (2.0, 4.0)  # final checkpoint of the main rows
    # `--set` on the SFD config (the `demo` preset fitted to the data) of every row: the demo's
    # backbone (sfd.experiments.demo.DEMO_MODEL, 1.3M parameters, ~6x cheaper per step than the
    # preset's), so the default grid fits in ~3 hours on 2 CPU cores.
    overrides: tuple[str, ...] = GRID_MODEL
    quick: bool = False
    # semantic channels of the embedded default's SemVAE (None: the demo's 4); a different count
    # trains its own SemVAE and latents in OUT/base, so it needs its own grid directory
    sem_channels: int | None = None
    # the embedded dataset (sfd.experiments.demo.EMBEDDED_DATASETS) and its option
    dataset: str = "fashion-mnist"
    background_strength: float = 0.6
    # texture-VAE steps of the embedded base (None: the demo's 250); like sem_channels, another
    # value trains its own data stages, so it needs its own grid directory
    texture_steps: int | None = None
    nfe_samplers: tuple[str, ...] = NFE_SAMPLERS
    nfe_rows: tuple[str, ...] = NFE_ROWS

    def __post_init__(self) -> None:
        for name in self.nfe_samplers:
            parse_sampler(name)
        for name in self.rows:
            parse_row(name)
        if not self.rows:
            raise ValueError("no ablation rows given")
        if self.steps < 1 or self.checkpoints < 1 or self.checkpoints > self.steps:
            raise ValueError(
                f"steps={self.steps} and checkpoints={self.checkpoints} must satisfy "
                f"1 <= checkpoints <= steps"
            )
        if self.main_seeds < 1 or self.sweep_seeds < 1:
            raise ValueError("main_seeds and sweep_seeds must be >= 1")
        if self.num_samples < 2:
            raise ValueError(f"num_samples must be >= 2; got {self.num_samples}")
        if self.sem_channels is not None and self.sem_channels < 1:
            raise ValueError(f"sem_channels must be >= 1; got {self.sem_channels}")
        if self.texture_steps is not None and self.texture_steps < 1:
            raise ValueError(f"texture_steps must be >= 1; got {self.texture_steps}")

    @classmethod
    def quick_settings(cls, **kw) -> AblationSettings:
        """Toy sizes for the test suite: 2 rows x 2 seeds x 2 checkpoints."""
        base = dict(
            rows=("baseline", "sfd"),
            main_seeds=2,
            sweep_seeds=1,
            steps=8,
            checkpoints=2,
            num_samples=40,
            num_steps=3,
            method="euler",
            cfg_sweep=(2.0,),
            nfe_samplers=("euler-2",),
            overrides=(
                "model.depth=2",
                "model.width=64",
                "model.num_heads=2",
                "model.repa_projector_dim=64",
                "model.repa_depth=1",
                "train.global_batch_size=16",
            ),
            quick=True,
        )
        base.update(kw)
        return cls(**base)

    def checkpoint_steps(self) -> list[int]:
        k = self.checkpoints
        return sorted({round(self.steps * (i + 1) / k) for i in range(k)})

    def seeds_of(self, row: str) -> int:
        """Main, control, learned and storage rows (paired with ``sfd`` seed by seed) get the main
        seeds."""
        main = is_paired(row) or row.startswith(STORE_PREFIX)
        return self.main_seeds if main else self.sweep_seeds

    def jobs(self) -> list[tuple[str, int]]:
        """Every (row, seed), seeds first so a partial grid has whole seeds of every row."""
        most = max(self.seeds_of(r) for r in self.rows)
        return [(r, s) for s in range(most) for r in self.rows if s < self.seeds_of(r)]

    def protocol(self) -> dict:
        return (
            {
                "steps": self.steps,
                "checkpoints": self.checkpoint_steps(),
                "num_samples": self.num_samples,
                "sample_seed": self.sample_seed,
                "sampler": f"{self.method} {self.num_steps}",
                "cfg_scale": self.cfg_scale,
                "cfg_sweep": list(self.cfg_sweep),
                "overrides": [o for o in self.overrides if not is_speed_switch(o)],
            }
            | ({} if self.sem_channels is None else {"sem_channels": self.sem_channels})
            | ({} if self.texture_steps is None else {"texture_steps": self.texture_steps})
            | (
                {}
                if self.dataset == "fashion-mnist"
                else {"dataset": self.dataset, "background_strength": self.background_strength}
            )
        )


def is_speed_switch(override: str) -> bool:
    """A ``train.KEY=VALUE`` override a run may change on resume (compile, fused AdamW, ...):
    it changes a run's numbers by fp32 rounding at most, so it is not part of a grid's protocol
    and rows trained with and without it share a grid (docs/ABLATION.md, "Time")."""
    section, _, key = override.split("=", 1)[0].strip().partition(".")
    return section == "train" and key in RESUMABLE_CHANGES


def parse_sampler(name: str) -> tuple[str, int]:
    """``"euler-8"`` / ``"heun-10"`` -> (method, steps); ``"dopri5"`` -> ("dopri5", 0): a
    fixed-step solver of the registry with its steps, or an adaptive one by name."""
    method, _, steps = name.partition("-")
    spec = SOLVERS.get(method)
    if spec is not None and not spec.fixed_step and not steps:
        return method, 0
    if spec is not None and spec.fixed_step and re.fullmatch(r"[1-9][0-9]*", steps):
        return method, int(steps)
    fixed = [f"{n}-N" for n, s in SOLVERS.items() if s.fixed_step]
    adaptive = [n for n, s in SOLVERS.items() if not s.fixed_step]
    raise ValueError(
        f"unknown sampler {name!r}; expected {', '.join(fixed)} (N >= 1 steps) or "
        f"{', '.join(adaptive)}"
    )


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> (i, n) with 0 <= i < n."""
    m = re.fullmatch(r"(\d+)/(\d+)", text.strip())
    if m is None or int(m.group(2)) < 1 or int(m.group(1)) >= int(m.group(2)):
        raise ValueError(f"--shard must look like i/n with 0 <= i < n (e.g. 0/4); got {text!r}")
    return int(m.group(1)), int(m.group(2))


# --------------------------------------------------------------------------------------------
# Configs of the rows


def base_config(meta: dict, overrides: tuple[str, ...] = (), name: str = "demo") -> Config:
    """The ``demo`` preset fitted to a latent set (channels, grid, classes, REPA dim)."""
    cfg = preset(name)
    cfg = dataclasses.replace(
        cfg,
        model=dataclasses.replace(
            cfg.model, num_classes=int(meta["num_classes"]), repa_dim=int(meta["repa_dim"])
        ),
        latent=dataclasses.replace(
            cfg.latent,
            tex_channels=int(meta["tex_channels"]),
            sem_channels=int(meta["sem_channels"]),
            size=int(meta["size"]),
        ),
    )
    return apply_overrides(cfg, list(overrides))


def row_config(base: Config, row: Row, sem_channels: int, seed: int, steps: int) -> Config:
    """The SFD config of one row and training seed."""
    model, latent, flow = base.model, base.latent, base.flow
    if row.semantic == "none":
        latent = dataclasses.replace(latent, sem_channels=0)
        model = dataclasses.replace(model, dual_timestep=False)
    else:
        latent = dataclasses.replace(latent, sem_channels=sem_channels)
    if not row.repa:
        model = dataclasses.replace(model, repa_dim=0)
        flow = dataclasses.replace(flow, repa_weight=0.0)
    flow = dataclasses.replace(flow, delta_t=row.delta_t)
    train = dataclasses.replace(base.train, total_steps=steps, seed=seed, keep_last=0)
    return dataclasses.replace(base, model=model, latent=latent, flow=flow, train=train)


def sample_config(
    cfg: Config, s: AblationSettings, cfg_scale: float, sampler: str | None = None
) -> Config:
    """The grid's sampling settings (its sampler, or ``sampler`` of the NFE axis)."""
    method, steps = (s.method, s.num_steps) if sampler is None else parse_sampler(sampler)
    sample = dataclasses.replace(
        cfg.sample,
        method=method,
        num_steps=max(steps, 1),
        cfg_scale_tex=cfg_scale,
        cfg_scale_sem=cfg_scale,
        cfg_interval_tex=(0.0, 1.0),
        cfg_interval_sem=(0.0, 1.0),
        guide="cfg",
        timestep_shift=0.0,
        compute_batch=max(cfg.sample.compute_batch, 50),
    )
    return dataclasses.replace(cfg, sample=sample)
