"""Where one training step's time goes: a torch.profiler breakdown by phase and by op type.

The step is ``sfd bench``'s (the :class:`sfd.training.step.TrainStep` of ``sfd train`` on one
fixed synthetic batch), plus the loader's ``global_batch`` of the preset's shape for the data
phase. Phases: data, forward (the model), loss (the rest of ``flow_loss``), backward,
grad norm + non-finite check, optimizer (AdamW), EMA. Each op's self CPU time is charged to
the phase it ran in; within forward and backward, to its op type.

    python scripts/profile_step.py --preset demo --batch-size 64 --steps 3
    python scripts/profile_step.py --preset S --batch-size 8 --steps 2 [--set train.KEY=VALUE]
"""

from __future__ import annotations

import argparse
import collections
import tempfile
import time

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from sfd.bench.throughput import build_train_step
from sfd.config import apply_overrides, preset

PHASES = ("data", "forward", "loss", "backward", "grad_norm", "optimizer", "ema")


def phase_of(event) -> str | None:
    """The phase range an event ran under (walking up its CPU parents), if any."""
    e = event
    while e is not None:
        if e.name.startswith("autograd::engine"):
            return "backward"
        if e.name.startswith("phase:"):
            return e.name.removeprefix("phase:")
        e = e.cpu_parent
    return None


def instrument(model, step_fn) -> None:
    """Wrap the model's forward and the step's update parts in named profiler ranges."""
    forward = model.forward

    def timed_forward(*args, **kwargs):
        with record_function("phase:forward"):
            return forward(*args, **kwargs)

    model.forward = timed_forward
    loss = step_fn.loss

    def timed_loss(*args, **kwargs):
        with record_function("phase:loss"):
            return loss(*args, **kwargs)

    step_fn.loss = timed_loss


def data_step(cfg, batch_size: int) -> None:
    """The loader's work for one batch: the seeded draws of ``global_batch`` (no disk)."""
    lat = cfg.latent
    g = torch.Generator().manual_seed(0)
    shape = (batch_size, lat.channels, lat.size, lat.size)
    eps, x0 = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    _ = torch.rand(batch_size, generator=g), eps * 0.5 + x0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--top", type=int, default=12)
    args = ap.parse_args()
    cfg = apply_overrides(preset(args.preset), args.overrides)
    step_fn, step = build_train_step(cfg, args.batch_size)
    for _ in range(2):  # warm-up (and compilation)
        step()
    instrument(step_fn.model, step_fn)
    update = step_fn.update

    def timed_update(sums, **kw):
        # The phases of TrainStep.update, split by the ops they run.
        with record_function("phase:update"):
            return update(sums, **kw)

    step_fn.update = timed_update
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        for _ in range(args.steps):
            with record_function("phase:data"):
                data_step(cfg, args.batch_size)
            step()
        wall = (time.perf_counter() - t0) / args.steps
    report(prof, wall, args)


def classify_update(name: str) -> str:
    if "AdamW" in name or "adam" in name.lower():
        return "optimizer"
    if "lerp" in name or name == "aten::copy_":
        return "ema"
    return "grad_norm"


def report(prof, wall: float, args) -> None:
    per_phase: dict[str, float] = collections.Counter()
    per_op: dict[str, dict[str, float]] = collections.defaultdict(collections.Counter)
    for e in prof.events():
        if e.name.startswith("phase:"):
            continue
        phase = phase_of(e)
        if phase is None:
            phase = "other"
        if phase == "update":
            parent = e
            while parent.cpu_parent is not None and not parent.cpu_parent.name.startswith("phase"):
                parent = parent.cpu_parent
            phase = classify_update(parent.name)
        us = e.self_cpu_time_total
        per_phase[phase] += us
        per_op[phase][e.name] += us
    total = sum(per_phase.values())
    n = args.steps
    print(f"# {args.preset}, batch {args.batch_size}, {torch.get_num_threads()} threads")
    print(f"wall {1e3 * wall:.1f} ms/step; profiled self CPU {total / 1e3 / n:.1f} ms/step")
    print("| phase | ms/step | share |\n|---|---|---|")
    for phase, us in sorted(per_phase.items(), key=lambda kv: -kv[1]):
        print(f"| {phase} | {us / 1e3 / n:.1f} | {100 * us / total:.1f}% |")
    for phase in ("forward", "backward", "loss", "optimizer", "ema", "grad_norm", "other"):
        ops = per_op.get(phase)
        if not ops:
            continue
        print(f"\n{phase}: top ops (ms/step)")
        for name, us in sorted(ops.items(), key=lambda kv: -kv[1])[: args.top]:
            print(f"  {us / 1e3 / n:8.2f}  {name}")
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        prof.export_chrome_trace(f.name)
        print(f"\nchrome trace: {f.name}")


if __name__ == "__main__":
    main()
