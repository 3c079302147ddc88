"""The steps of ``scripts/gpu_check.sh``: the GPU figures, each step recorded alone.

``python scripts/gpu_check.py run --json J [--dry-run] STEP:SECONDS ...`` runs the named steps in
this process, each under its own alarm, and writes each one's result (or error text, or skip
reason) into J under ``steps.STEP`` as soon as it ends, so one failing step loses nothing else.
``gpu_check.sh`` runs one step per process on a GPU (isolation: an OOM or a compile crash cannot
poison the next step) and all of them in one process for ``--dry-run`` (one torch import).
``mark``, ``skip``, ``summarize`` and ``meta`` do not import torch (nor the steps).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from sfd.tools.gpu_record import (
    Ctx,
    Skip,
    StepTimeout,
    demo_progress,
    error_text,
    mark_unfinished,
    meta_item,
    put_step,
    summarize,
    update,
)

MIN_STEP_S = 15  # a step with less time than this left in the budget is skipped
Step = Callable[[Ctx, dict, float], dict]


def steps() -> dict[str, Step]:
    """The steps by name; importing them imports torch and the library."""
    from sfd.tools import gpu_bench, gpu_demo, gpu_setup  # lazy: record-only calls skip torch

    b = gpu_bench.bench
    return {
        "env": lambda c, p, s: gpu_setup.step_env(c, p),
        "install": lambda c, p, s: gpu_setup.step_install(c, p),
        "pytest_gpu": lambda c, p, s: gpu_setup.step_pytest_gpu(c, p),
        "bench_B_eager": lambda c, p, s: b(c, p, "B", False),
        "bench_B_compile": lambda c, p, s: b(c, p, "B", True),
        "bench_XL_eager": lambda c, p, s: b(c, p, "XL", False),
        "bench_XL_compile": lambda c, p, s: b(c, p, "XL", True),
        "bench_XL_max_batch": gpu_bench.step_max_batch,
        "sample_XL": gpu_bench.step_sample,
        "demo_data": lambda c, p, s: gpu_demo.step_demo_data(c, p),
        "demo": lambda c, p, s: gpu_demo.step_demo(c, p),
    }


def run_step(ctx: Ctx, name: str, seconds: float, step: Step) -> dict:
    partial: dict = {}
    put_step(ctx.json_path, name, {"status": "running", "timeout_s": seconds})

    def alarm(signum, frame):
        raise StepTimeout(f"step {name} ran past its {seconds:.0f} s")

    signal.signal(signal.SIGALRM, alarm)
    signal.alarm(max(1, int(seconds)))
    t0, started = time.perf_counter(), time.time()
    try:
        entry = {"status": "ok", "result": step(ctx, partial, seconds)}
    except Skip as e:
        entry = {"status": "skipped", "reason": str(e)}
    except StepTimeout as e:
        entry = {"status": "timeout", "error": str(e), "partial": partial}
    except BaseException as e:  # noqa: BLE001 - recorded; the next step must still run
        entry = {"status": "error", "error": error_text(e), "partial": partial}
    finally:
        signal.alarm(0)
    entry |= {"seconds": round(time.perf_counter() - t0, 2), "timeout_s": seconds}
    entry |= {"started": round(started, 1), "ended": round(time.time(), 1)}  # epoch: overlaps
    if name.startswith("demo") and entry["status"] in ("timeout", "error"):
        entry["partial"] |= demo_progress(ctx.work)
    put_step(ctx.json_path, name, entry)
    print(f"[gpu_check] {name}: {entry['status']} in {entry['seconds']} s", file=sys.stderr)
    return entry


def run_steps(ctx: Ctx, items: list[str], registry: dict[str, Step] | None = None) -> None:
    """Run ``STEP:SECONDS`` items in order (the steps of ``registry``, by default
    :func:`steps`), each under its cap and the global deadline."""
    registry = steps() if registry is None else registry
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for item in items:
        name, _, seconds = item.partition(":")
        if name not in registry:
            raise SystemExit(f"unknown step {name!r}; expected one of {', '.join(registry)}")
        cap = float(seconds or 600)
        left = math.inf if ctx.deadline is None else ctx.deadline - time.time()
        if left < MIN_STEP_S:
            put_step(ctx.json_path, name, {"status": "skipped", "reason": "time budget spent"})
        else:
            run_step(ctx, name, min(cap, left), registry[name])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="run STEP:SECONDS ... in this process")
    run.add_argument("steps", nargs="+")
    mark = sub.add_parser("mark", help="record steps a killed worker left unfinished")
    mark.add_argument("steps", nargs="+")
    mark.add_argument("--rc", type=int, required=True)
    mark.add_argument("--seconds", type=float, required=True)
    skip = sub.add_parser("skip", help="record steps as skipped")
    skip.add_argument("steps", nargs="+")
    skip.add_argument("--reason", required=True)
    sub.add_parser("summarize", help="check the targets; print them")
    meta = sub.add_parser("meta", help="set meta KEY=VALUE (JSON values)")
    meta.add_argument("items", nargs="+")
    for p in (run, mark, skip, sub.choices["summarize"], meta):
        p.add_argument("--json", type=Path, required=True)
        p.add_argument("--out", type=Path, default=None)
        p.add_argument("--work", type=Path, default=None)
        p.add_argument("--dry-run", action="store_true")
        p.add_argument("--deadline", type=float, default=None, help="epoch seconds")
    a = ap.parse_args(argv)
    ctx = Ctx(a.dry_run, a.json, a.out or a.json.parent, a.work or a.json.parent, a.deadline)
    if a.cmd == "run":
        run_steps(ctx, a.steps)
    elif a.cmd == "skip":
        for name in a.steps:
            put_step(a.json, name, {"status": "skipped", "reason": a.reason})
    elif a.cmd == "mark":
        for name in a.steps:
            update(
                a.json, lambda data, name=name: mark_unfinished(ctx, data, name, a.rc, a.seconds)
            )
    elif a.cmd == "summarize":
        data = update(a.json, lambda data: data.__setitem__("targets", summarize(data["steps"])))
        print(json.dumps(data["targets"], indent=2))
    else:
        update(a.json, lambda data: data.setdefault("meta", {}).update(map(meta_item, a.items)))


if __name__ == "__main__":
    main()
