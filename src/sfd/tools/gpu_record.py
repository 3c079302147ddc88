"""The GPU check's record: one JSON file written as each step ends, so one failing step loses
nothing else (``scripts/gpu_check.sh``; docs/PERFORMANCE.md). Nothing here imports torch at
module level: recording, skipping and summarising run in a fresh process for every step."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]  # the checkout the tools run from (scripts/)
# Targets: XL bf16 training MFU against the in-run matmul peak, img/s against
# 2 x the ~170 img/s per GPU derived from LightningDiT's log, compile speed-up, staged sampler.
TARGETS = {"xl_train_mfu": 0.45, "xl_train_img_per_s": 340.0, "compile_speedup": 1.3}
STAGED_TOLERANCE = 0.05


class Skip(Exception):
    """A step that cannot run here; its message is the recorded reason."""


class StepTimeout(Exception):
    pass


@dataclass
class Ctx:
    dry_run: bool
    json_path: Path
    out: Path
    work: Path
    deadline: float | None = None  # time.time() by which every step must have ended

    @property
    def device(self) -> str:
        import torch  # lazy: recording and summarising run without torch

        return "cuda" if torch.cuda.is_available() and not self.dry_run else "cpu"


def need_cuda(ctx: Ctx) -> None:
    """The GPU-sized steps run on CUDA only (on a CPU, ``--dry-run`` runs them at tiny sizes)."""
    if not ctx.dry_run and ctx.device != "cuda":
        raise Skip("no CUDA device here (on a CPU, run gpu_check.sh --dry-run)")


# The JSON file: read-modify-write, atomic replace.


def load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {"meta": {}, "steps": {}}


def save(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


@contextlib.contextmanager
def locked(path: Path):
    """Exclusive lock on the JSON's folder: the demo's data stages write from a second process."""
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def update(path: Path, change: Callable[[dict], object]) -> dict:
    """Apply ``change`` to the JSON in place, under the lock; returns the new contents."""
    with locked(path):
        data = load(path)
        change(data)
        save(path, data)
    return data


def put_step(path: Path, name: str, entry: dict) -> None:
    update(path, lambda data: data.setdefault("steps", {}).__setitem__(name, entry))


def demo_progress(work: Path) -> dict:
    """What a demo that did not finish got done: its stages and its last training log row."""
    out, progress = work / "demo", {}
    if (out / "stages.json").exists():
        stages = json.loads((out / "stages.json").read_text())
        progress["stage_seconds"] = {k: v.get("seconds") for k, v in stages.items()}
    log = out / "run" / "log.jsonl"
    if log.exists() and log.read_text().strip():
        progress["last_train_log"] = json.loads(log.read_text().strip().splitlines()[-1])
    return progress


def mark_unfinished(ctx: Ctx, data: dict, name: str, rc: int, seconds: float) -> None:
    """A step its worker did not record (killed by the outer timeout, or crashed)."""
    steps = data.setdefault("steps", {})
    if steps.get(name, {}).get("status") not in (None, "running"):
        return
    entry = {"status": "timeout" if rc in (124, 137) else "error", "rc": rc}
    entry["error"] = f"worker exited with rc {rc} after {seconds:.0f} s before recording this"
    if name.startswith("demo"):
        entry["partial"] = demo_progress(ctx.work)
    steps[name] = entry


def summarize(steps: dict) -> dict:
    """The issue's targets against what the steps measured (None where a step has no figure)."""

    def res(name: str) -> dict:
        s = steps.get(name, {})
        return s.get("result", {}) if s.get("status") == "ok" else {}

    def target(value, goal, higher=True) -> dict:
        met = None if value is None else (value >= goal if higher else abs(value) <= goal)
        return {"value": value, "target": goal, "met": met}

    def speedup(p: str):
        e, c = res(f"bench_{p}_eager"), res(f"bench_{p}_compile")
        return c["train_img_per_s"] / e["train_img_per_s"] if e and c else None

    xl = [r for r in (res("bench_XL_eager"), res("bench_XL_compile")) if r]
    best = max(xl, key=lambda r: r["train_img_per_s"]) if xl else {}
    out = {
        "xl_train_mfu": target(best.get("train_mfu"), TARGETS["xl_train_mfu"]),
        "xl_train_img_per_s": target(best.get("train_img_per_s"), TARGETS["xl_train_img_per_s"]),
        "compile_speedup_XL": target(speedup("XL"), TARGETS["compile_speedup"]),
        "compile_speedup_B": target(speedup("B"), TARGETS["compile_speedup"]),
    }
    for name in ("bench_XL_eager", "bench_XL_compile", "bench_B_eager", "bench_B_compile"):
        r = res(name)
        out[f"staged_overhead_{name[6:]}"] = target(
            r.get("staged_overhead"), STAGED_TOLERANCE, higher=False
        )
    out["statuses"] = {k: v.get("status") for k, v in steps.items()}
    return out


def error_text(e: BaseException) -> str:
    text = "".join(traceback.format_exception(e))
    return text if len(text) < 6000 else text[:1500] + "\n...\n" + text[-4000:]


def meta_item(item: str) -> tuple[str, object]:
    key, _, value = item.partition("=")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value
