"""The ablation grid's rows (docs/ABLATION.md): the semantic latent, Δt and REPA of each named
row, the Δt sweep's ``dt-X``, the storage rows' ``store-SPEC`` and the learned-schedule rows with
their probe variants, and which rows are compared with which seed by seed."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sfd.data.latent_storage import Storage


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
    probe_steps: int | None = None  # a learned row's probe length (None: the probe's default)

    @property
    def latents(self) -> str:
        """The key of the latent set this row trains on (:class:`AblationData.latents`)."""
        return self.semantic if self.store is None else f"{STORE_PREFIX}{self.store}"

    def __post_init__(self) -> None:
        if not 0.0 <= self.delta_t <= 1.0:
            raise ValueError(f"row {self.name!r}: Δt must be in [0, 1]; got {self.delta_t}")
        if self.probe_lam is not None and (self.schedule != "learned" or self.probe_lam < 0):
            raise ValueError(f"row {self.name!r}: a probe λ >= 0 goes with a learned schedule")
        if self.probe_steps is not None and (self.schedule != "learned" or self.probe_steps < 1):
            raise ValueError(f"row {self.name!r}: probe steps >= 1 go with a learned schedule")
        if self.warp and self.schedule != "learned":
            raise ValueError(f"row {self.name!r}: a warp row goes with a learned schedule")

    @property
    def schedule_key(self) -> str:
        """The name of a learned row's probe schedules in OUT/schedules/ (``KEY-seedN.json``)."""
        lam = "" if self.probe_lam is None else f"-lam{self.probe_lam:g}"
        steps = "" if self.probe_steps is None else f"-p{self.probe_steps}"
        return f"{self.semantic}{lam}{steps}"


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
# the sampling-steps axis: rows every seed of which is evaluated with each of the settings'
# samplers at its final checkpoint (no retraining)
NFE_ROWS = ("sfd", "semvae-sync", "random-sync", "random-sf", "learned", "redi-learned")


def sweep_rows() -> tuple[str, ...]:
    """The Δt sweep's rows that are not main rows (0 is ``semvae-sync``, 0.3 is ``sfd``)."""
    return tuple(f"dt-{d:g}" for d in SWEEP if d not in (0.0, 0.3))


# --- learned schedules (docs/SCHEDULE.md) ----------------------------------------------------
# `learned` / `redi-learned`: the SemVAE / PCA latent trained on a schedule that a probe learned
# on that latent set with the row's training seed (cached in OUT/schedules/, made before the
# run trains: sfd.experiments.ablate_schedules). Variants of `learned`, by suffix (in this
# order, either or both): `-lamX`, the probe's kinetic-energy weight λ = X (default 0.1; a
# larger λ keeps the path nearer the diagonal); `-pN`, a probe of N steps (default 200).
# `warp` (with the same suffixes): the control of a learned row's lead. Both parts follow the
# mean of that probe's two curves (the same file, the same seed), so the run keeps the path's
# time warp (where along t the noise levels fall) and loses its lead (lead_at_middle = 0).
# Not in the default grid: ask for them by name.
LEARNED_ROWS = ("learned", "redi-learned")
WARP_PREFIX = "warp"
_NAMED.update(
    {
        "learned": Row("learned", "semvae", 0.0, schedule="learned"),
        "redi-learned": Row("redi-learned", "pca", 0.0, schedule="learned"),
        "warp": Row("warp", "semvae", 0.0, schedule="learned", warp=True),
    }
)
_VARIANT = re.compile(r"(learned|warp)(?:-lam([0-9]*\.?[0-9]+))?(?:-p([1-9][0-9]*))?")
# rows compared seed by seed with ``sfd`` / ``semvae-sync``: they get the main seeds, the guidance
# sweep, the curves plot and the sampling-steps axis (with every learned variant)
PAIRED_ROWS = MAIN_ROWS + CONTROL_ROWS + LEARNED_ROWS


def _learned_variant(name: str) -> Row | None:
    """The row of a learned variant's name (``warp``, ``learned-lamX``, ``warp-pN``, ...)."""
    m = _VARIANT.fullmatch(name)
    if m is None or name == "learned":
        return None
    lam = None if m.group(2) is None else float(m.group(2))
    steps = None if m.group(3) is None else int(m.group(3))
    warp = m.group(1) == WARP_PREFIX
    return Row(name, "semvae", 0.0, schedule="learned", probe_lam=lam, warp=warp, probe_steps=steps)


def is_paired(name: str) -> bool:
    """Compared with ``sfd`` / ``semvae-sync`` seed by seed: main, control, learned (any
    variant) and warp rows get the main seeds, the guidance sweep and the curves plot (storage
    rows: the seeds)."""
    return name in PAIRED_ROWS or _learned_variant(name) is not None


def on_nfe_axis(name: str, nfe_rows: tuple[str, ...]) -> bool:
    """Sampled at every sampler of the axis: the settings' rows and every learned variant."""
    return name in nfe_rows or _learned_variant(name) is not None


def paired_with(name: str) -> tuple[str, ...]:
    """The rows a learned variant is compared with seed by seed: the learned row whose path it
    comes from (a warp row) or the default probe's (any other variant), then both of the SemVAE
    latent's fixed schedules."""
    if name.startswith(WARP_PREFIX):
        return (name.replace(WARP_PREFIX, "learned", 1), "semvae-sync", "sfd")
    return ("learned", "semvae-sync", "sfd")


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


def parse_row(name: str) -> Row:
    """A named row, ``dt-X`` (the SemVAE latent at Δt = X in [0, 1]), ``store-SPEC`` or a
    learned variant (``learned-lamX``, ``learned-pN``, ``warp-lamX``, ...; see above)."""
    if name in _NAMED:
        return _NAMED[name]
    if name.startswith(STORE_PREFIX):
        return _store_row(name)
    variant = _learned_variant(name)
    if variant is not None:
        return variant
    m = re.fullmatch(r"dt-([0-9]*\.?[0-9]+)", name)
    if m is None:
        raise ValueError(
            f"unknown ablation row {name!r}; expected one of {', '.join(_NAMED)}, dt-X "
            f"with X in [0, 1] (e.g. dt-0.5), store-SPEC, learned-lamX (e.g. learned-lam1), "
            f"learned-pN (e.g. learned-p600) or warp-lamX"
        )
    value = float(m.group(1))
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"row {name!r}: Δt must be in [0, 1]; got {value}")
    return Row(name, "semvae", value)


def row_delta_t(name: str) -> float | None:
    """Δt of a row on the SemVAE latent (the Δt curve), else None."""
    row = parse_row(name)
    return (
        row.delta_t
        if row.semantic == "semvae" and row.schedule == "offset" and row.store is None
        else None
    )
