"""The ablation grid's rows (semantic latent, Δt, REPA; see :mod:`sfd.experiments.ablate`), its
settings (sizes, seeds, checkpoints, guidance) and the SFD config of each row."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from sfd.config import Config, apply_overrides, preset
from sfd.data.latent_storage import Storage
from sfd.experiments.demo import DEMO_MODEL
from sfd.flow.solvers import SOLVERS
from sfd.training.run_dir import RESUMABLE_CHANGES

# --------------------------------------------------------------------------------------------
# Rows


@dataclass(frozen=True)
class Row:
    """One configuration of the grid."""

    name: str
    semantic: str  # "semvae", "pca", "random" (the control's SemVAE) or "none" (texture only)
    delta_t: float
    repa: bool = True
    schedule: str = "offset"  # "learned": a probe's schedule (see the learned-schedule block)
    store: str | None = None  # a storage spec (``store-*`` rows, below); None: the set as given
    probe_lam: float | None = None  # a learned row's probe λ (None: the probe's default)
    warp: bool = False  # a learned row's path made synchronous: both parts on its mean curve

    @property
    def latents(self) -> str:
        """The key of the latent set this row trains on (:class:`AblationData.latents`)."""
        return self.semantic if self.store is None else f"{STORE_PREFIX}{self.store}"

    def __post_init__(self) -> None:
        if not 0.0 <= self.delta_t <= 1.0:
            raise ValueError(f"row {self.name!r}: Δt must be in [0, 1]; got {self.delta_t}")
        if self.probe_lam is not None and (self.schedule != "learned" or self.probe_lam < 0):
            raise ValueError(f"row {self.name!r}: a probe λ >= 0 goes with a learned schedule")
        if self.warp and self.schedule != "learned":
            raise ValueError(f"row {self.name!r}: a warp row goes with a learned schedule")

    @property
    def schedule_key(self) -> str:
        """The name of a learned row's probe schedules in OUT/schedules/ (``KEY-seedN.json``)."""
        lam = "" if self.probe_lam is None else f"-lam{self.probe_lam:g}"
        return f"{self.semantic}{lam}"


MAIN_ROWS = ("baseline", "repa", "semvae-sync", "sfd", "redi", "redi-sf")
SWEEP = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)  # the paper's Δt sweep (Fig. 5)
_NAMED = {
    "baseline": Row("baseline", "none", 0.0, repa=False),
    "repa": Row("repa", "none", 0.0),
    "semvae-sync": Row("semvae-sync", "semvae", 0.0),
    "sfd": Row("sfd", "semvae", 0.3),
    "redi": Row("redi", "pca", 0.0),
    "redi-sf": Row("redi-sf", "pca", 0.3),
    # the negative control: the SemVAE latent of a randomly initialised encoder
    # (sfd.experiments.control); texture latents and REPA targets as in every other row
    "random-sync": Row("random-sync", "random", 0.0),
    "random-sf": Row("random-sf", "random", 0.3),
}
CONTROL_ROWS = ("random-sync", "random-sf")
# the sampling-steps axis: samplers every seed of these rows is evaluated with at its final
# checkpoint (no retraining); "heun-10" is the curves' own sampler
NFE_ROWS = ("sfd", "semvae-sync", "random-sync", "random-sf", "learned", "redi-learned")
NFE_SAMPLERS = ("euler-4", "euler-8", "euler-16", "euler-32", "heun-10", "dopri5")


# --- learned schedules (docs/SCHEDULE.md) ----------------------------------------------------
# `learned` / `redi-learned`: the SemVAE / PCA latent trained on a schedule that a probe learned
# on that latent set with the row's training seed (cached in OUT/schedules/, made before the
# run trains: sfd.experiments.ablate_schedules). `learned-lamX`: `learned` with the probe's
# kinetic-energy weight λ = X (the default is 0.1; a larger λ keeps the path nearer the
# diagonal). `warp` / `warp-lamX`: the control of a learned row's lead. Both parts follow the
# mean of that probe's two curves (the same file, the same seed), so the run keeps the path's
# time warp (where along t the noise levels fall) and loses its lead (lead_at_middle = 0).
# Not in the default grid: ask for them by name.
LEARNED_ROWS = ("learned", "redi-learned")
LEARNED_LAM_PREFIX = "learned-lam"
WARP_PREFIX = "warp"
# rows compared seed by seed with ``sfd`` / ``semvae-sync``: they get the main seeds, the guidance
# sweep, the curves plot and the sampling-steps axis (with every `learned-lamX` row)
PAIRED_ROWS = MAIN_ROWS + CONTROL_ROWS + LEARNED_ROWS
_NAMED.update(
    {
        "learned": Row("learned", "semvae", 0.0, schedule="learned"),
        "redi-learned": Row("redi-learned", "pca", 0.0, schedule="learned"),
        "warp": Row("warp", "semvae", 0.0, schedule="learned", warp=True),
    }
)


# ---------------------------------------------------------------------------------------------


GRID_MODEL = DEMO_MODEL  # the demo's backbone (sfd.experiments.demo)


def sweep_rows() -> tuple[str, ...]:
    """The Δt sweep's rows that are not main rows (0 is ``semvae-sync``, 0.3 is ``sfd``)."""
    return tuple(f"dt-{d:g}" for d in SWEEP if d not in (0.0, 0.3))


# --- Storage rows: ``store-SPEC`` is the ``sfd`` row (SemVAE latent, Δt 0.3, REPA) trained on
# the SemVAE latent set re-encoded with the storage SPEC (docs/FORMATS.md, e.g. store-f16,
# store-f16-pca16-flip, store-f16-semvae), to be compared with ``sfd`` seed by seed.
STORE_PREFIX = "store-"


def _store_row(name: str) -> Row:
    try:
        spec = Storage.parse(name.removeprefix(STORE_PREFIX)).spec
    except ValueError as err:
        raise ValueError(f"ablation row {name!r}: {err}") from None
    return Row(name, "semvae", _NAMED["sfd"].delta_t, store=spec)


# --- end of storage rows


def parse_row(name: str) -> Row:
    """A named row, ``dt-X`` (the SemVAE latent at Δt = X in [0, 1]), ``store-SPEC``,
    ``learned-lamX`` (a learned schedule probed with λ = X >= 0) or ``warp-lamX`` (its
    synchronous control)."""
    if name in _NAMED:
        return _NAMED[name]
    if name.startswith(STORE_PREFIX):
        return _store_row(name)
    lam = re.fullmatch(r"(learned|warp)-lam([0-9]*\.?[0-9]+)", name)
    if lam is not None:
        warp = lam.group(1) == WARP_PREFIX
        lam_value = float(lam.group(2))
        return Row(name, "semvae", 0.0, schedule="learned", probe_lam=lam_value, warp=warp)
    m = re.fullmatch(r"dt-([0-9]*\.?[0-9]+)", name)
    if m is None:
        raise ValueError(
            f"unknown ablation row {name!r}; expected one of {', '.join(_NAMED)}, dt-X "
            f"with X in [0, 1] (e.g. dt-0.5), store-SPEC, learned-lamX (e.g. learned-lam1) or "
            f"warp-lamX"
        )
    value = float(m.group(1))
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"row {name!r}: Δt must be in [0, 1]; got {value}")
    return Row(name, "semvae", value)


def _learned_variant(name: str) -> bool:
    """A `learned-lamX`, `warp` or `warp-lamX` row."""
    return name.startswith(LEARNED_LAM_PREFIX) or name.split("-lam")[0] == WARP_PREFIX


def is_paired(name: str) -> bool:
    """Compared with ``sfd`` / ``semvae-sync`` seed by seed: main, control, learned (any λ) and
    warp rows get the main seeds, the guidance sweep and the curves plot (storage rows: the
    seeds)."""
    return name in PAIRED_ROWS or _learned_variant(name)


def on_nfe_axis(name: str, nfe_rows: tuple[str, ...]) -> bool:
    """Sampled at every sampler of the axis: the settings' rows, every learned-λ and warp row."""
    return name in nfe_rows or _learned_variant(name)


def paired_with(name: str) -> tuple[str, ...]:
    """The rows a learned-λ or warp row is compared with seed by seed: the learned row whose
    path it comes from (a warp row) or the default-λ one (a learned-λ row), then both of the
    SemVAE latent's fixed schedules."""
    if name.split("-lam")[0] == WARP_PREFIX:
        return (name.replace(WARP_PREFIX, "learned", 1), "semvae-sync", "sfd")
    return ("learned", "semvae-sync", "sfd")


def row_delta_t(name: str) -> float | None:
    """Δt of a row on the SemVAE latent (the Δt curve), else None."""
    row = parse_row(name)
    return (
        row.delta_t
        if row.semantic == "semvae" and row.schedule == "offset" and row.store is None
        else None
    )


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
