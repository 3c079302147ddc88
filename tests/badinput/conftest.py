"""Shared inputs of the bad-input corpus: a tiny latent set, a tiny trained run, image files,
and the checks every case makes (exit code, one-line message, inputs left unchanged)."""

from __future__ import annotations

import hashlib
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from sfd.cli import main
from tests.helpers import tiny_config, write_synthetic_latents


def snapshot(*roots: Path) -> dict[str, tuple[str, int]]:
    """sha256 and mtime of every file under ``roots``: what 'nothing changed' compares."""
    out = {}
    for root in roots:
        root = Path(root)
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for p in files:
            out[str(p)] = (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
    return out


def refused(args, code: int, *needles: str, inputs=()):
    """Run ``sfd ARGS`` in-process; assert exit ``code``, one ``Error:`` line holding every
    needle, no traceback, and the files under ``inputs`` unchanged. Returns the error line."""
    before = snapshot(*inputs)
    result = CliRunner().invoke(main, [str(a) for a in args])
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output, result.output
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert str(needle) in errors[0], errors[0]
    assert snapshot(*inputs) == before, "an input was changed"
    return errors[0]


def accepted(args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, (result.output, result.exception)
    return result


class Evil:
    """Pickled, it would create ``marker`` when loaded: the payload of a malicious .pt."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


class EvilShell:
    """A plain pickle that would run a shell command creating ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def write_evil(path: Path, marker: Path) -> Path:
    """``.pt``: torch.save of a dict holding the payload; otherwise a raw pickle (protocol 4)."""
    if path.suffix == ".pt":
        torch.save({"state_dict": {"w": torch.zeros(1)}, "x": Evil(marker)}, path)
    else:
        path.write_bytes(pickle.dumps({"state_dict": EvilShell(marker)}, protocol=4))
    return path


@pytest.fixture(scope="session")
def latents(tmp_path_factory) -> Path:
    return write_synthetic_latents(
        tmp_path_factory.mktemp("lat") / "lat", tiny_config(), count=8, shard_size=4
    )


@pytest.fixture(scope="session")
def trained(tmp_path_factory, latents) -> Path:
    """A tiny run with one checkpoint (2 steps)."""
    from sfd.training.loop import train

    run = tmp_path_factory.mktemp("run") / "run"
    cfg = tiny_config(total_steps=2, global_batch_size=4, ckpt_every=2, log_every=1)
    train(cfg, latents, run, progress=False)
    return run


@pytest.fixture
def copy_of(tmp_path):
    def copy(src: Path, name: str | None = None) -> Path:
        dst = tmp_path / (name or Path(src).name)
        shutil.copytree(src, dst)
        return dst

    return copy


TRAIN = ["train", "--preset", "tiny", "--device", "cpu", "--set", "train.total_steps=1"]
TRAIN += ["--set", "train.global_batch_size=4"]
SAMPLE = ["--num", 2, "--batch-size", 2, "--latents-only", "--device", "cpu"]
SAMPLE += ["--set", "sample.method=euler", "--set", "sample.num_steps=2"]
