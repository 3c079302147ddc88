"""``scripts/gpu_check.sh``: the GPU check runs on a CPU (``--dry-run``) and records
every step, and one failing or slow step does not lose the others (``sfd.tools.gpu_check``)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import sfd.bench
from sfd.tools import gpu_bench, gpu_check, gpu_demo, gpu_record
from sfd.tools.gpu_record import Ctx, Skip

REPO = Path(__file__).resolve().parents[1]
STEPS = (
    "env",
    "install",
    "pytest_gpu",
    "bench_XL_eager",
    "bench_XL_compile",
    "bench_B_eager",
    "bench_B_compile",
    "bench_XL_max_batch",
    "sample_XL",
    "demo_data",
    "demo",
)


def numbers(tree) -> list[float]:
    """Every int/float (not bool) anywhere in a JSON tree."""
    if isinstance(tree, dict):
        return [x for v in tree.values() for x in numbers(v)]
    if isinstance(tree, list):
        return [x for v in tree for x in numbers(v)]
    return [tree] if isinstance(tree, int | float) and not isinstance(tree, bool) else []


@pytest.mark.slow  # 60-70 s on the busy 2-core development host (3 processes import torch)
def test_dry_run_records_every_step_with_figures_or_a_reason(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable, "TMPDIR": str(tmp_path)}
    proc = subprocess.run(
        ["bash", "scripts/gpu_check.sh", "--dry-run"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    data = json.loads((out / "gpu_check.json").read_text())
    assert "demo_data: ok" in (out / "gpu_check.log").read_text() or (
        data["steps"]["demo_data"]["status"] == "skipped"
    )
    assert data["meta"]["dry_run"] is True
    assert set(data["steps"]) == set(STEPS)
    for name, entry in data["steps"].items():
        if entry["status"] == "skipped":
            assert entry["reason"], name
        else:
            assert entry["status"] == "ok", (name, entry)
            assert numbers(entry["result"]), name
            assert all(math.isfinite(x) for x in numbers(entry["result"])), name
    assert data["steps"]["install"]["status"] == "skipped"  # nothing is installed in a dry run
    assert data["steps"]["pytest_gpu"]["status"] == "skipped"
    for name in ("bench_XL_eager", "bench_XL_compile", "bench_B_eager", "bench_B_compile"):
        result = data["steps"][name]["result"]
        assert result["train_img_per_s"] > 0 and result["train_mfu"] > 0, name
        assert result["compile"] == name.endswith("compile")
    assert data["steps"]["bench_XL_max_batch"]["result"]["largest_batch"] > 0
    runs = data["steps"]["sample_XL"]["result"]["runs"]
    assert {r["method"] for r in runs} == {"heun", "dopri5"}
    assert all(r["nfe"] > 0 and r["img_per_s"] > 0 and r["finite"] for r in runs)
    assert data["targets"]["xl_train_mfu"]["value"] is not None
    assert not list(tmp_path.glob("sfd_gpu_check.*"))  # the work directory is removed


def test_a_failing_step_does_not_stop_the_next_ones(tmp_path, monkeypatch):
    def boom(ctx, partial, seconds):
        partial["done_before_failing"] = 1
        raise RuntimeError("kernel exploded")

    def slow(ctx, partial, seconds):
        partial["first_half"] = 2.0
        time.sleep(5)

    def skip(ctx, partial, seconds):
        raise Skip("no widget here")

    steps = {"boom": boom, "slow": slow, "skip": skip, "fine": lambda c, p, s: {"img_per_s": 3}}
    ctx = Ctx(True, tmp_path / "g.json", tmp_path, tmp_path)
    gpu_check.run_steps(ctx, ["boom:10", "slow:1", "skip:10", "fine:10"], steps)
    got = json.loads((tmp_path / "g.json").read_text())["steps"]
    assert got["boom"]["status"] == "error" and "kernel exploded" in got["boom"]["error"]
    assert got["boom"]["partial"] == {"done_before_failing": 1}
    assert got["slow"]["status"] == "timeout" and got["slow"]["partial"] == {"first_half": 2.0}
    assert got["slow"]["seconds"] < 4  # the alarm stopped it
    assert got["skip"] == {**got["skip"], "status": "skipped", "reason": "no widget here"}
    assert got["fine"]["status"] == "ok" and got["fine"]["result"] == {"img_per_s": 3}


def test_steps_past_the_deadline_are_skipped(tmp_path, monkeypatch):
    ctx = Ctx(True, tmp_path / "g.json", tmp_path, tmp_path, deadline=time.time() + 5)
    gpu_check.run_steps(ctx, ["late:60"], {"late": lambda c, p, s: {"x": 1}})
    got = json.loads((tmp_path / "g.json").read_text())["steps"]["late"]
    assert got == {"status": "skipped", "reason": "time budget spent"}


def test_a_killed_worker_marks_only_its_unfinished_steps(tmp_path):
    path = tmp_path / "g.json"
    gpu_record.put_step(path, "done", {"status": "ok", "result": {"x": 1}})
    gpu_record.put_step(path, "busy", {"status": "running"})
    args = ["--json", str(path), "--work", str(tmp_path), "--rc", "124", "--seconds", "9"]
    gpu_check.main(["mark", *args, "done", "busy", "never", "demo"])
    got = json.loads(path.read_text())["steps"]
    assert got["done"] == {"status": "ok", "result": {"x": 1}}
    assert got["busy"]["status"] == got["never"]["status"] == "timeout"
    assert got["demo"]["partial"] == {}  # no demo directory: nothing was done


def test_targets_compare_the_figures_with_the_issue():
    def bench(img_s, mfu, staged):
        return {
            "status": "ok",
            "result": {"train_img_per_s": img_s, "train_mfu": mfu, "staged_overhead": staged},
        }

    steps = {
        "bench_XL_eager": bench(200.0, 0.30, 0.01),
        "bench_XL_compile": bench(400.0, 0.60, -0.07),
        "bench_B_eager": {"status": "error", "error": "x"},
    }
    t = gpu_record.summarize(steps)
    assert t["xl_train_mfu"] == {"value": 0.60, "target": 0.45, "met": True}  # the faster run
    assert t["xl_train_img_per_s"]["met"] is True
    assert t["compile_speedup_XL"]["value"] == 2.0 and t["compile_speedup_XL"]["met"]
    assert t["compile_speedup_B"] == {"value": None, "target": 1.3, "met": None}
    assert t["staged_overhead_XL_eager"]["met"] is True
    assert t["staged_overhead_XL_compile"]["met"] is False  # |-7%| > 5%
    assert t["statuses"]["bench_B_eager"] == "error"


def test_the_batch_search_stops_at_out_of_memory_and_keeps_what_fitted(tmp_path, monkeypatch):
    def fake_bench(cfg, batch, device, **kw):
        if batch > 8:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 TiB")
        figures = {f.name: 1.0 for f in dataclasses.fields(sfd.bench.throughput.BenchResult)}
        return sfd.bench.throughput.BenchResult(**figures | {"batch_size": batch})

    monkeypatch.setattr(gpu_bench, "run_bench", fake_bench)
    ctx = Ctx(True, tmp_path / "g.json", tmp_path, tmp_path)
    result = gpu_bench.step_max_batch(ctx, {}, budget_s=60)
    assert result["largest_batch"] == 8 and result["largest"]["batch_size"] == 8
    assert [t["fits"] for t in result["tried"]] == [True, False]
    assert result["stopped"] == "out of memory at batch 16"


def test_the_demo_without_fashion_mnist_is_a_recorded_skip(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_demo, "FMNIST_DIRS", (str(tmp_path / "nowhere"),))
    monkeypatch.setenv("FMNIST_DIR", str(tmp_path))
    with pytest.raises(Skip, match="no Fashion-MNIST IDX files"):
        gpu_demo._fmnist_root()
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"")
    assert gpu_demo._fmnist_root() == tmp_path


def test_the_steps_the_driver_runs_are_the_registered_steps():
    """Every step gpu_check.sh names (and only those) is a step the worker knows, and the
    dry run's list of expected steps is the same set."""
    text = (REPO / "scripts" / "gpu_check.sh").read_text()
    driver = set(re.findall(r"\b([a-zA-Z_]+):(?:\d+\b|\$1)", text))  # STEP:SECONDS
    assert driver == set(gpu_check.steps()) == set(STEPS)


def _driver(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(REPO / "scripts" / "gpu_check.sh"), *args],
        env={**os.environ, "PYTHON": "/nonexistent/python", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_driver_refuses_bad_arguments_in_one_line_before_running_anything(tmp_path):
    bad = _driver("--fast", OUT=str(tmp_path / "o"))
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr == "gpu_check.sh: unknown argument --fast (try --help)\n"
    assert not (tmp_path / "o").exists()  # nothing created, no Python started
    missing = _driver("--only", OUT=str(tmp_path / "o"))
    assert missing.returncode != 0 and "--only needs a comma-separated list" in missing.stderr
    usage = _driver("--help")
    assert usage.returncode == 0 and "bash scripts/gpu_check.sh --dry-run" in usage.stdout
    assert not usage.stdout.startswith("#") and "set -euo" not in usage.stdout
