"""Accuracy of the staged samplers against a converged solution, on the release fixture model.

Usage: python scripts/sampler_accuracy.py [FIXTURE_DIR]

Reference: the release's own dopri5 at atol = rtol = 1e-7 (``samp.dopri5_tight.final``). For each
solver and boundary rule it prints the number of model evaluations (NFE) and the max-abs and
relative-L2 error of the final latent.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from sfd.flow.guidance import plain_velocity
from sfd.flow.schedule import staged_schedule
from sfd.flow.solvers import dopri5, euler, heun
from sfd.latents.composite import LatentLayout
from sfd.model import LightningDiT
from sfd.upstream import config_from_kwargs

fixtures = Path(
    sys.argv[1]
    if len(sys.argv) > 1
    else Path(__file__).resolve().parents[1] / "tests/fixtures/upstream_parity"
)
meta = json.loads((fixtures / "upstream_config.json").read_text())
cfg = config_from_kwargs(meta["model_kwargs"], meta["create_transport_kwargs"])
model = LightningDiT.from_configs(cfg.model, cfg.latent).eval()
model.load_state_dict(load_file(str(fixtures / "state_dict.safetensors")))
cases = load_file(str(fixtures / "cases.safetensors"))
layout = LatentLayout(cfg.latent.tex_channels, cfg.latent.sem_channels)
z, ref = cases["samp.z"], cases["samp.dopri5_tight.final"]
fn = plain_velocity(model, cases["samp.y"])
dt = cfg.flow.delta_t

print(f"{'solver':<28} {'NFE':>5} {'max abs':>9} {'rel L2':>8}")
with torch.no_grad():
    runs = []
    for rule in ("release", "exact"):
        for steps in (7, 13, 24, 49):
            runs.append(
                (
                    f"euler {steps} steps, {rule}",
                    lambda s=steps, r=rule: euler(
                        fn, z, staged_schedule(s, dt, boundary=r), layout
                    ),
                )
            )
        for steps in (6, 12, 24):
            runs.append(
                (
                    f"heun {steps} steps, {rule}",
                    lambda s=steps, r=rule: heun(fn, z, staged_schedule(s, dt, boundary=r), layout),
                )
            )
        runs.append(
            (
                f"dopri5 1e-6/1e-3, {rule}",
                lambda r=rule: dopri5(fn, z, dt, layout, 1e-6, 1e-3, boundary=r),
            )
        )
    for name, run in runs:
        sol = run()
        err = (sol.final - ref).abs().max().item()
        rel = ((sol.final - ref).norm() / ref.norm()).item()
        print(f"{name:<28} {sol.nfe:>5} {err:>9.4f} {rel:>8.4f}")
