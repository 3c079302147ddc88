"""Measure the schedule probe on a latent set (docs/SCHEDULE.md, "Measured").

1. The probe for every seed x λ x probe length (and, optionally, from SFD's Δt = 0.3): the
   learned Δt-equivalent (the lead where the path crosses u_sem + u_tex = 1), its spread over
   seeds, and the probe's seconds.
2. Cost: one probe step against one training step of the demo's SFD run (the demo's model and
   batch, REPA on), timed interleaved; the probe's cost as a fraction of 3,000 such steps.
3. Overhead: the demo's training step and a 10-step Heun sampling solve with SFD's offset and
   with a learned schedule, timed interleaved (the style of ``sfd bench``).

    python scripts/measure_learned_schedule.py --data runs/demo/latents --out /tmp/sched
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

import torch

from sfd.bench.throughput import build_train_step, synthetic_batch, time_interleaved
from sfd.config import Config
from sfd.data.latent_shards import LatentDataset
from sfd.experiments.ablate_grid import GRID_MODEL, base_config
from sfd.flow.guidance import plain_velocity
from sfd.flow.progress import lead_at_middle, table_path
from sfd.flow.run_path import path_of
from sfd.flow.schedule import path_schedule
from sfd.flow.solvers import heun
from sfd.latents.composite import LatentLayout
from sfd.model import LightningDiT
from sfd.training.probe import (
    ProbeSettings,
    ScheduleParams,
    probe_config,
    probe_update,
    run_probe,
)


def probe_grid(
    data: Path, out: Path, seeds, lams, lengths, inits, beta=2.0, order="free"
) -> list[dict]:
    rows = []
    for init in inits:
        for steps in lengths:
            for lam in lams:
                for seed in seeds:
                    s = ProbeSettings(
                        steps=steps,
                        lam=lam,
                        seed=seed,
                        init_delta_t=init,
                        sem_weight=beta,
                        order=order,
                    )
                    table, report = run_probe(data, s)
                    row = {
                        "init_delta_t": init,
                        "steps": steps,
                        "lam": lam,
                        "seed": seed,
                        "beta": beta,
                        "order": order,
                        "lead": lead_at_middle(table_path(table)),
                        "seconds": report["seconds"],
                        "table": table.tolist(),
                    }
                    print(json.dumps({k: v for k, v in row.items() if k != "table"}), flush=True)
                    rows.append(row)
                    (out / "probes.json").write_text(json.dumps(rows, indent=1))
    return rows


def summary(rows: list[dict]) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["init_delta_t"], r["steps"], r["lam"]), []).append(r)
    out = []
    for (init, steps, lam), rs in groups.items():
        leads = [r["lead"] for r in rs]
        out.append(
            {
                "init_delta_t": init,
                "steps": steps,
                "lam": lam,
                "seeds": len(rs),
                "lead_mean": statistics.mean(leads),
                "lead_sd": statistics.stdev(leads) if len(leads) > 1 else 0.0,
                "lead_min": min(leads),
                "lead_max": max(leads),
                "seconds_mean": statistics.mean(r["seconds"] for r in rs),
            }
        )
    return out


def demo_config(data: Path) -> Config:
    """The demo's SFD run on this latent set: its model, batch 64, REPA on, eager."""
    meta = LatentDataset(data).meta
    cfg = base_config(meta, GRID_MODEL)
    train = dataclasses.replace(cfg.train, global_batch_size=64, compile=False)
    return dataclasses.replace(cfg, train=train)


def probe_step_fn(data: Path, batch: int):
    meta = LatentDataset(data).meta
    s = ProbeSettings(batch=batch)
    cfg = probe_config(meta, s)
    layout = LatentLayout(cfg.latent.tex_channels, cfg.latent.sem_channels)
    model, params = LightningDiT(cfg.model, cfg.latent), ScheduleParams(s.knots)
    opt = torch.optim.AdamW(model.parameters(), lr=s.lr, betas=(0.9, 0.99))
    opt_s = torch.optim.Adam(params.parameters(), lr=s.schedule_lr)
    b = synthetic_batch(cfg, batch, torch.device("cpu"))

    def step() -> None:
        probe_update(model, params, (opt, opt_s), b, layout, s)

    return step


def with_table(cfg: Config, table: torch.Tensor) -> Config:
    flow = dataclasses.replace(cfg.flow, schedule=tuple(table.flatten().tolist()))
    return dataclasses.replace(cfg, flow=flow)


def overhead(cfg: Config, table: torch.Tensor, iters: int) -> dict:
    """Training step and Heun-10 sampling, SFD's offset vs the learned table, interleaved."""
    learned = with_table(cfg, table)
    _, sfd_step = build_train_step(cfg, 64)
    _, learned_step = build_train_step(learned, 64)
    train = time_interleaved([sfd_step, learned_step], torch.device("cpu"), 3, iters)
    torch.manual_seed(0)
    model = LightningDiT(cfg.model, cfg.latent).eval()
    layout = LatentLayout(cfg.latent.tex_channels, cfg.latent.sem_channels)
    b = synthetic_batch(cfg, 50, torch.device("cpu"))

    def solve(flow):
        @torch.no_grad()
        def run() -> None:
            sched = path_schedule(10, path_of(flow))  # built per solve, as LatentSampler does
            heun(plain_velocity(model, b.y), b.x0, sched, layout)

        return run

    sample = time_interleaved([solve(cfg.flow), solve(learned.flow)], torch.device("cpu"), 2, iters)
    return {
        "train_ms": {"sfd": 1e3 * train[0], "learned": 1e3 * train[1]},
        "sample_heun10_ms": {"sfd": 1e3 * sample[0], "learned": 1e3 * sample[1]},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--lams", type=float, nargs="+", default=[0.01, 0.1])
    ap.add_argument("--lengths", type=int, nargs="+", default=[400, 1600])
    ap.add_argument("--inits", type=float, nargs="+", default=[0.0])
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--sem-weight", type=float, default=2.0, help="β of the probe loss")
    ap.add_argument("--order", default="free", choices=["free", "semantics-first"])
    ap.add_argument("--skip-probes", action="store_true")
    ap.add_argument("--no-timing", action="store_true", help="only the probe grid")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    result: dict = {"threads": torch.get_num_threads(), "torch": torch.__version__}
    if not a.skip_probes:
        rows = probe_grid(
            a.data, a.out, range(a.seeds), a.lams, a.lengths, a.inits, a.sem_weight, a.order
        )
        result["probes"] = summary(rows)
        table = torch.tensor(rows[-1]["table"])
    else:
        table = torch.tensor(json.loads((a.out / "probes.json").read_text())[-1]["table"])
    if a.no_timing:
        (a.out / "measure.json").write_text(json.dumps(result, indent=1))
        return
    cfg = demo_config(a.data)
    _, sfd_step = build_train_step(cfg, 64)
    probe_s, sfd_s = time_interleaved(
        [probe_step_fn(a.data, 64), sfd_step], torch.device("cpu"), 3, a.iters
    )
    result["step_ms"] = {"probe": 1e3 * probe_s, "demo_sfd": 1e3 * sfd_s}
    result["probe_cost_fraction"] = {
        str(n): n * probe_s / (3000 * sfd_s) for n in sorted(set(a.lengths))
    }
    result["overhead"] = overhead(cfg, table, a.iters)
    result["seconds"] = time.perf_counter() - t0
    (a.out / "measure.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
