"""The schedule probe: learn when each representation is denoised (docs/SCHEDULE.md).

A short joint run of a temporary small denoiser and a learnable progress path
(:class:`ScheduleParams`, a table of ``M + 1`` progress values per part, monotone by
construction), on generation times ``t ~ U[0, 1]``, with the loss per sample::

    sum_k w_k [ sg(r_k) mean (f_k - v_k)^2  +  lam r_k^2 mean sg(f_k)^2 ],   r_k = du_k/dt

- ``sg(r_k)``, the **schedule correction**: with t uniform, part k's own noise level u_k has
  density 1 / r_k, so weighting by r_k makes each part's weighting over its own noise levels
  uniform whatever the path (:func:`noise_level_weights` computes it); the path cannot lower the
  loss by spending less time at hard noise levels, only by choosing which noise level of the
  other part comes with each one. Its gradient reaches the path through the noisy inputs and the
  progress values the denoiser sees.
- the **kinetic energy** of the generation-time velocity ``r_k f_k`` (``f`` detached: it shapes
  the path, not the denoiser): it keeps the path smooth and stops it from turning serial.
- ``w = (1, flow.sem_weight)``: the main objective's β on the semantic part.

The schedule is frozen for the first ``warmup`` fraction of the probe (a denoiser that knows
nothing says nothing about when to denoise), then both train; the path is then frozen, saved
(:func:`save_schedule`) and the probe's denoiser thrown away.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from sfd.config import Config, FlowConfig, LatentConfig, ModelConfig, TrainConfig
from sfd.data.latent_shards import LatentDataset
from sfd.errors import BadInputError
from sfd.flow.path import interpolate, velocity_target
from sfd.flow.progress import (
    ProgressPath,
    lead_at_middle,
    offset_path,
    table_path,
    table_ramps,
)
from sfd.latents.composite import LatentLayout
from sfd.model import LightningDiT
from sfd.training.batches import EpochOrder, global_batch
from sfd.training.schedule_file import load_schedule, save_schedule

log = logging.getLogger("sfd.probe")


ORDERS = ("free", "semantics-first")


class ScheduleParams(nn.Module):
    """A learnable progress path: per part, ``knots`` rises (a softmax of ``logits``) stacked
    into a table from 0 to 1; monotone with fixed endpoints for any logits. ``order=
    "semantics-first"`` caps the texture row by the semantic one at every knot, so the path
    never lets texture lead (u_tex <= u_sem everywhere: both rows are linear between knots)."""

    def __init__(self, knots: int = 8, init_delta_t: float = 0.0, order: str = "free") -> None:
        super().__init__()
        if knots < 1:
            raise ValueError(f"a schedule needs knots >= 1; got {knots}")
        if order not in ORDERS:
            raise ValueError(f"schedule order must be one of {ORDERS}; got {order!r}")
        self.order = order
        rises = offset_path(init_delta_t).table(knots).diff(dim=-1)  # (2, M)
        floor = 1e-3 / knots  # SFD's flat stretches become nearly flat, still learnable
        self.logits = nn.Parameter(torch.log(rises + floor).float())

    @property
    def knots(self) -> int:
        return int(self.logits.shape[-1])

    def table(self) -> torch.Tensor:
        """(2, M + 1) progress values at t_j = j / M: 0, the cumulative rises, exactly 1."""
        inner = torch.softmax(self.logits, dim=-1).cumsum(-1)[:, :-1].clamp(max=1.0)
        zeros, ones = inner.new_zeros(2, 1), inner.new_ones(2, 1)
        table = torch.cat([zeros, inner, ones], dim=-1)
        if self.order == "semantics-first":
            table = torch.stack([torch.minimum(table[0], table[1]), table[1]])
        return table

    def path(self) -> ProgressPath:
        """The path through :meth:`table`, differentiable in the logits."""
        return ProgressPath(1.0, table_ramps(self.table()))


@dataclass
class ProbeTerms:
    """Per-sample terms (B,) of the probe loss (flow and kinetic, each summed over parts)."""

    flow: torch.Tensor
    kinetic: torch.Tensor

    def total(self) -> torch.Tensor:
        return (self.flow + self.kinetic).mean()


def probe_loss(
    model: nn.Module,
    x1: torch.Tensor,
    y: torch.Tensor,
    *,
    x0: torch.Tensor,
    t: torch.Tensor,
    path: ProgressPath,
    layout: LatentLayout,
    sem_weight: float = 2.0,
    lam: float = 0.1,
) -> ProbeTerms:
    """The schedule-corrected flow loss plus the kinetic energy (module docstring)."""
    u_tex, u_sem = path.progress(t)
    r_tex, r_sem = path.rate(t)
    x_t = interpolate(x0, x1, u_tex, u_sem, layout)
    target = velocity_target(x0, x1)
    pred = model(x_t, t_tex=u_tex, t_sem=u_sem, y=y).float()
    flow, kinetic = torch.zeros_like(t), torch.zeros_like(t)
    parts = ((layout.tex, 1.0, r_tex), (layout.sem, sem_weight, r_sem))
    for part, weight, rate in parts:
        err = (part(pred) - part(target)).pow(2).mean(dim=(1, 2, 3))
        energy = part(pred).detach().pow(2).mean(dim=(1, 2, 3))
        flow = flow + weight * rate.detach() * err
        kinetic = kinetic + weight * lam * rate.pow(2) * energy
    return ProbeTerms(flow, kinetic)


def noise_level_weights(path: ProgressPath, bins: int, samples: int = 100_000) -> torch.Tensor:
    """(2, bins): the corrected loss's total weight sg(r_k) on each bin of part k's own noise
    level, for t on a uniform midpoint grid (what ``t ~ U[0, 1]`` gives in expectation)."""
    t = (torch.arange(samples, dtype=torch.float64) + 0.5) / samples
    out = torch.zeros(2, bins, dtype=torch.float64)
    for k, (u, r) in enumerate(zip(path.progress(t), path.rate(t), strict=True)):
        index = (u.double() * bins).long().clamp(0, bins - 1)
        out[k].index_add_(0, index, r.double() / samples)
    return out


@dataclass(frozen=True)
class ProbeSettings:
    """The probe's choices (docs/SCHEDULE.md says why)."""

    steps: int = 200  # 1.4% of the demo's 3,000 SFD steps (docs/SCHEDULE.md)
    batch: int = 64
    knots: int = 8
    lam: float = 0.1
    warmup: float = 0.25  # fraction of the steps with the schedule frozen
    lr: float = 1e-3  # the denoiser's (AdamW, betas 0.9/0.99: the demo's)
    schedule_lr: float = 0.02  # the schedule logits' (Adam)
    init_delta_t: float = 0.0  # start at synchronous denoising
    order: str = "free"  # or "semantics-first": texture never ahead (ScheduleParams)
    width: int = 64
    depth: int = 2
    heads: int = 2
    sem_weight: float = 2.0
    seed: int = 0
    log_every: int = 25

    def __post_init__(self) -> None:
        for name in ("steps", "batch", "knots", "width", "depth", "heads", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"probe {name} must be >= 1; got {getattr(self, name)}")
        if self.order not in ORDERS:
            raise ValueError(f"probe order must be one of {ORDERS}; got {self.order!r}")
        if self.lam < 0 or not 0.0 <= self.warmup < 1.0:
            raise ValueError(f"probe lam must be >= 0 and warmup in [0, 1); got {self}")


def probe_config(meta: dict, s: ProbeSettings) -> Config:
    """The temporary denoiser's config: a small LightningDiT on the latent set's shape."""
    size = int(meta["size"])
    return Config(
        model=ModelConfig(
            depth=s.depth,
            width=s.width,
            num_heads=s.heads,
            patch_size=2 if size % 2 == 0 and size >= 8 else 1,
            num_classes=int(meta["num_classes"]),
            repa_dim=0,
        ),
        latent=LatentConfig(int(meta["tex_channels"]), int(meta["sem_channels"]), size),
        flow=FlowConfig(delta_t=0.0, time_dist="uniform", sem_weight=s.sem_weight),
        train=TrainConfig(global_batch_size=s.batch, seed=s.seed),
        preset="probe",
    )


def check_probe_data(data_dir: str | Path) -> LatentDataset:
    """The latent set, or one line if it cannot carry a schedule (no semantic channels)."""
    dataset = LatentDataset(data_dir)
    if int(dataset.meta["sem_channels"]) == 0:
        raise BadInputError(
            f"latent data {data_dir} has no semantic channels (sem_channels = 0): there is no "
            f"second representation to schedule"
        )
    return dataset


def probe_update(
    model: nn.Module,
    params: ScheduleParams,
    optimizers: tuple[torch.optim.Optimizer, torch.optim.Optimizer],
    b,
    layout: LatentLayout,
    s: ProbeSettings,
    move_schedule: bool = True,
) -> ProbeTerms:
    """One probe step on batch ``b``: the corrected flow loss plus the kinetic term, the
    denoiser updated, the schedule too unless ``move_schedule`` is off (its warm-up)."""
    opt, opt_schedule = optimizers
    terms = probe_loss(
        model,
        b.x1,
        b.y,
        x0=b.x0,
        t=b.base_time,
        path=params.path(),
        layout=layout,
        sem_weight=s.sem_weight,
        lam=s.lam,
    )
    opt.zero_grad(set_to_none=True)
    opt_schedule.zero_grad(set_to_none=True)
    terms.total().backward()
    opt.step()
    if move_schedule:
        opt_schedule.step()
    return terms


def run_probe(data_dir: str | Path, s: ProbeSettings) -> tuple[torch.Tensor, dict]:
    """Train the probe on a latent set; returns the frozen table (2, M + 1) and a report."""
    dataset = check_probe_data(data_dir)
    cfg = probe_config(dataset.meta, s)
    layout = LatentLayout(cfg.latent.tex_channels, cfg.latent.sem_channels)
    torch.manual_seed(s.seed)
    model = LightningDiT.from_configs(cfg.model, cfg.latent)
    params = ScheduleParams(s.knots, s.init_delta_t, s.order)
    opt = torch.optim.AdamW(model.parameters(), lr=s.lr, betas=(0.9, 0.99))
    opt_schedule = torch.optim.Adam(params.parameters(), lr=s.schedule_lr)
    order, history, start = EpochOrder(len(dataset), s.seed), [], time.perf_counter()
    for step in range(s.steps):
        b = global_batch(dataset, order, cfg, step)
        move_schedule = step >= int(s.warmup * s.steps)
        terms = probe_update(model, params, (opt, opt_schedule), b, layout, s, move_schedule)
        if step % s.log_every == 0 or step == s.steps - 1:
            with torch.no_grad():
                lead = lead_at_middle(params.path())
            row = {"step": step, "flow": float(terms.flow.detach().mean()), "lead": lead}
            history.append({**row, "kinetic": float(terms.kinetic.detach().mean())})
            log.info("probe step %d: flow %.4f lead %.3f", step, row["flow"], lead)
    with torch.no_grad():
        table = params.table().detach().double()
    report = {
        "settings": dataclasses.asdict(s),
        "data": str(data_dir),
        "seconds": time.perf_counter() - start,
        "denoiser_parameters": sum(p.numel() for p in model.parameters()),
        "history": history,
    }
    return table, report


def learn_schedule(data_dir: str | Path, out: str | Path, s: ProbeSettings) -> dict:
    """``sfd learn-schedule``: probe ``data_dir``, write the schedule file ``out`` and its
    picture beside it (``out`` with suffix .png); refuses before any work if the data has no
    semantic channels or either file exists. Returns the file's document."""
    # lazy: sfd.figures imports matplotlib (~1 s), for the picture only
    from sfd.figures import plot_schedule

    out = Path(out)
    picture = out.with_suffix(".png")
    for target in (out, picture):
        if target.exists():
            raise BadInputError(f"{target} exists; choose another --out or remove it first")
    check_probe_data(data_dir)
    table, report = run_probe(data_dir, s)
    save_schedule(out, table, report)
    learned = table_path(load_schedule(out))
    paths = {"learned": learned, "SFD (Δt = 0.3)": offset_path(0.3), "synchronous": offset_path(0)}
    plot_schedule(paths, picture)
    return json.loads(out.read_text())
