"""Parity where users are: an export loads in a fresh virtual environment WITHOUT sfd (only
torch, diffusers, safetensors and their dependencies, installed from local files) with
``DiffusionPipeline.from_pretrained(OUT, trust_remote_code=True)``, and its PNGs are
byte-identical to ``sfd sample``'s for the same seeds: a tiny run with CFG, the same run with an
AutoGuidance guide exported beside it, and a release checkpoint imported with
``sfd import-upstream`` (``--decoder`` given), also with AutoGuidance.

Slow (the environment installs torch and diffusers): ``pytest -m slow
tests/ecosystem/test_remote_venv.py``. Packages come only from local sources: the ``file://``
indices and ``find-links`` directories of pip's configuration, and ``$SFD_WHEELHOUSE``
(default ``~/.cache/sfd/wheels``) for a wheel they lack (here: diffusers; fill it once with
``pip download diffusers==VERSION --no-deps -d ~/.cache/sfd/wheels``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import torch

from sfd.api import load_checkpoint
from sfd.generate import balanced_labels
from sfd.model import LightningDiT
from sfd.training.checkpoint import save_checkpoint
from tests.ecosystem.ecosystem_helpers import cli, import_release, perturbed, tiny_run_fixture  # noqa: F401

pytestmark = pytest.mark.slow
LOADER = Path(__file__).with_name("remote_load.py")
WHEELHOUSE = Path(os.environ.get("SFD_WHEELHOUSE", Path.home() / ".cache/sfd/wheels"))


def sh(*args, env=None, timeout=1800) -> subprocess.CompletedProcess:
    """Run a command; without ``env``, this one less PYTHONPATH (the source tree stays out)."""
    env = env or {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, env=env, timeout=timeout
    )


def local_sources() -> list[str]:
    """pip arguments that name only local package sources (no network)."""
    conf = sh(sys.executable, "-m", "pip", "config", "list").stdout
    urls, links = [], [str(WHEELHOUSE)]
    for line in conf.splitlines():
        key, _, value = line.partition("=")
        values = value.strip().strip("'\"").split()
        if key.endswith("index-url"):
            urls += [u for u in values if u.startswith("file:")]
        elif key.endswith("find-links"):
            links += [v for v in values if not v.startswith(("http:", "https:"))]
    args = ["--index-url", urls[0]] if urls else ["--no-index"]
    args += [a for u in urls[1:] for a in ("--extra-index-url", u)]
    return args + [a for d in dict.fromkeys(links) for a in ("--find-links", d)]


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("venv") / "env"
    res = sh(sys.executable, "-m", "venv", root)
    assert res.returncode == 0, res.stderr
    wanted = ["torch==2.13.0", f"diffusers=={version('diffusers')}"]
    wanted += [f"safetensors=={version('safetensors')}"]
    res = sh(root / "bin/python", "-m", "pip", "install", "-q", *local_sources(), *wanted)
    assert res.returncode == 0, (
        f"installing {wanted} from local files failed (a wheel missing? see this module's "
        f"docstring):\n{res.stderr[-3000:]}"
    )
    res = sh(root / "bin/python", "-c", "import sfd")
    assert res.returncode != 0 and "No module named 'sfd'" in res.stderr  # sfd is not there
    return root


def remote(venv: Path, export: Path, out: Path, spec: dict, cache: Path) -> list[bytes]:
    """PNG bytes of the export's images, generated in ``venv`` with trust_remote_code=True."""
    env = {"PATH": os.environ["PATH"], "HOME": str(cache), "HF_MODULES_CACHE": str(cache)}
    env["HF_HUB_OFFLINE"] = "1"
    spec = {**spec, "threads": torch.get_num_threads()}  # the results depend on it, as sfd's do
    res = sh(venv / "bin/python", LOADER, export, out, json.dumps(spec), env=env, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr[-3000:]
    assert "diffusers_modules" in json.loads(res.stdout.strip().splitlines()[-1])["pipeline"]
    return [p.read_bytes() for p in sorted(out.glob("*.png"))]


def cli_pngs(out: Path, *args) -> list[bytes]:
    res = cli("sample", *args, "--out", out)
    assert res.exit_code == 0, res.output
    return [p.read_bytes() for p in sorted((out / "images").glob("*.png"))]


def test_tiny_run_with_cfg_and_autoguidance_loads_without_sfd(venv, tiny_run, tmp_path):
    model, ckpt = load_checkpoint(tiny_run / "run")
    torch.manual_seed(1)
    guide = perturbed(LightningDiT.from_configs(ckpt.config.model, ckpt.config.latent), 2)
    save_checkpoint(tmp_path / "guide", step=1, config=ckpt.config, stats=ckpt.stats, ema=guide)
    out = tmp_path / "export"
    res = cli("export-diffusers", tiny_run / "run", out, "--guide", tmp_path / "guide")
    assert res.exit_code == 0, res.output
    num, seed = 5, 7
    labels = balanced_labels(range(num), 10).tolist()
    assert dataclasses.asdict(ckpt.config.sample)["cfg_scale_tex"] == 2.0  # CFG is on

    want = cli_pngs(tmp_path / "cli", tiny_run / "run", "--num", num, "--seed", seed)
    spec = {"labels": labels, "seed": seed, "kwargs": {}}
    got = remote(venv, out, tmp_path / "remote", spec, tmp_path / "modules")
    assert len(got) == num and got == want

    sets = ["--set", "sample.guide=autoguidance", "--guide", tmp_path / "guide"]
    want = cli_pngs(tmp_path / "cli-ag", tiny_run / "run", "--num", num, "--seed", seed, *sets)
    spec["kwargs"] = {"guidance": "autoguidance"}
    got_ag = remote(venv, out, tmp_path / "remote-ag", spec, tmp_path / "modules")
    assert len(got_ag) == num and got_ag == want and got_ag != got


def test_imported_release_loads_without_sfd(venv, tmp_path):
    (tmp_path / "release").mkdir()
    rel = import_release(tmp_path / "release")
    out = tmp_path / "export"
    res = cli(
        "export-diffusers", rel / "main", out, "--decoder", rel / "vae", "--guide", rel / "guide"
    )
    assert res.exit_code == 0, res.output
    num, seed, scale = 3, 11, 1.5
    settings = {"method": "heun", "num_steps": 3, "compute_batch": 4, "guide": "autoguidance"}
    settings |= {"cfg_scale_tex": scale, "cfg_scale_sem": scale}
    sets = [a for k, v in settings.items() for a in ("--set", f"sample.{k}={v}")]
    want = cli_pngs(
        tmp_path / "cli",
        rel / "main",
        "--guide",
        rel / "guide",
        "--decoder",
        rel / "vae",
        "--num",
        num,
        "--seed",
        seed,
        *sets,
    )
    spec = {
        "labels": balanced_labels(range(num), 10).tolist(),
        "seed": seed,
        "scheduler": {"compute_batch": 4},
        "kwargs": {
            "num_inference_steps": 3,
            "method": "heun",
            "guidance_scale": scale,
            "guidance": "autoguidance",
        },
    }
    got = remote(venv, out, tmp_path / "remote", spec, tmp_path / "modules")
    assert len(got) == num and got == want
