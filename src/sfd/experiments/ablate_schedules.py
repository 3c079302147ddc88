"""The schedules the grid's learned rows train on (docs/SCHEDULE.md, docs/ABLATION.md): a
probe's schedule per latent set and training seed (`learned`, `redi-learned` and the variants
`learned-lamX`, `learned-pN`), and its synchronous control on the same time warp (`warp`,
`warp-lamX`), each made once into ``OUT/schedules/`` before the run trains."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from sfd.config import Config
from sfd.experiments.ablate_rows import Row
from sfd.flow.progress import check_table
from sfd.training.probe import ProbeSettings, learn_schedule
from sfd.training.schedule_file import load_schedule, save_schedule


def warp_table(table: torch.Tensor) -> torch.Tensor:
    """The synchronous path on a learned table's time warp: both rows the mean of its two
    (2, M + 1) rows; endpoints stay exactly 0 and 1 and the mean of monotone rows is monotone."""
    mean = check_table(table).mean(dim=0)
    return torch.stack([mean, mean])


def with_learned_schedule(cfg: Config, row: Row, out, latents, seed: int, quick: bool) -> Config:
    """``cfg`` trained on the probe's schedule for ``row`` (a learned row), probing ``latents``
    with ``seed`` first if ``OUT/schedules/`` lacks it; other rows unchanged."""
    if row.schedule != "learned":
        return cfg

    target = Path(out) / "schedules" / f"{row.schedule_key}-seed{seed}.json"
    if not target.exists():
        probe = ProbeSettings(steps=20, batch=16, seed=seed) if quick else ProbeSettings(seed=seed)
        if row.probe_lam is not None:
            probe = dataclasses.replace(probe, lam=row.probe_lam)
        if row.probe_steps is not None:
            probe = dataclasses.replace(probe, steps=row.probe_steps)
        learn_schedule(latents, target, probe)
    if row.warp:
        learned, target = target, target.with_name(f"{target.stem}-warp.json")
        if not target.exists():
            note = {"warp_of": learned.name, "rule": "both parts on the mean of its curves"}
            save_schedule(target, warp_table(load_schedule(learned)), note)
    flow = dataclasses.replace(cfg.flow, schedule_file=str(target))
    return dataclasses.replace(cfg, flow=flow)
