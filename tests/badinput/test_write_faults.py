"""Faults during writes (ENOSPC / EIO mid-write) and two trainers on one run directory."""

import errno
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from sfd.data import tensor_files
from sfd.data.latent_shards import write_latent_shard
from sfd.data.shards import finished_shard
from sfd.errors import EXIT_BUSY, EXIT_WRITE, WriteError
from sfd.training.checkpoint import list_checkpoints
from tests.badinput.conftest import TRAIN, accepted, refused


def _failing_save(code):
    real = tensor_files.save_file

    def save(tensors, path, metadata=None):
        real(tensors, path, metadata=metadata)  # a whole file, then cut: the disk fills midway
        with open(path, "r+b") as f:
            f.truncate(100)
        raise OSError(code, __import__("os").strerror(code), path)

    return save


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO])
def test_checkpoint_write_fault_keeps_the_previous_one(latents, tmp_path, monkeypatch, code):
    run = tmp_path / "run"
    args = [*TRAIN, "--set", "train.ckpt_every=2", "--data", latents, "--out", run]
    accepted([*args, "--set", "train.total_steps=2"])
    monkeypatch.setattr(tensor_files, "save_file", _failing_save(code))
    line = refused(
        [*args, "--set", "train.total_steps=4"],
        EXIT_WRITE,
        "step-0000004",
        __import__("os").strerror(code),
        "step-0000002 is intact",
    )
    assert "Traceback" not in line
    assert [p.name for p in list_checkpoints(run)] == ["step-0000002"]
    assert not [p for p in run.rglob("*") if ".tmp" in p.name], "temp files left"
    monkeypatch.undo()
    accepted([*args, "--set", "train.total_steps=4"])  # resumes from step 2
    other = tmp_path / "straight"
    accepted(
        [
            *TRAIN,
            "--set",
            "train.ckpt_every=2",
            "--set",
            "train.total_steps=4",
            "--data",
            latents,
            "--out",
            other,
        ]
    )
    for name in ("model", "ema", "optimizer"):
        a = load_file(str(list_checkpoints(run)[-1] / f"{name}.safetensors"))
        b = load_file(str(list_checkpoints(other)[-1] / f"{name}.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_shard_write_fault(tmp_path, monkeypatch):
    def tensors(n):
        z = torch.zeros(n, 2, 1, 2, 2)
        return {
            "label": torch.zeros(n, dtype=torch.long),
            "tex_mean": z,
            "tex_std": z + 1,
            "sem_mean": z.clone(),
            "sem_std": z + 1,
        }

    write_latent_shard(tmp_path, 0, tensors(3))
    before = (tmp_path / "shard-00000.safetensors").read_bytes()
    monkeypatch.setattr(tensor_files, "save_file", _failing_save(errno.ENOSPC))
    with pytest.raises(WriteError, match="shard-00001.safetensors failed: No space left"):
        write_latent_shard(tmp_path, 1, tensors(3))
    with pytest.raises(WriteError, match="shard-00000.safetensors failed: No space left"):
        write_latent_shard(tmp_path, 0, tensors(5))  # a rewrite keeps the old file
    assert (tmp_path / "shard-00000.safetensors").read_bytes() == before
    assert finished_shard(tmp_path, 0) is not None and finished_shard(tmp_path, 1) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "shard-00000.json",
        "shard-00000.safetensors",
    ]


def test_fsync_fault(tmp_path, monkeypatch):
    def fsync(fd):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(tensor_files.os, "fsync", fsync)
    with pytest.raises(WriteError, match="x.json failed: Input/output error"):
        tensor_files.atomic_write_json(tmp_path / "x.json", {"a": 1})
    assert list(tmp_path.iterdir()) == []


def test_second_trainer_refused_and_stale_lock_taken_over(latents, tmp_path):
    run = tmp_path / "run"
    args = [*TRAIN, "--data", latents, "--out", run]
    run.mkdir()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        import socket

        (run / ".lock").write_text(f"{socket.gethostname()} {live.pid}")
        refused(args, EXIT_BUSY, str(run), f"process {live.pid}", inputs=[run])
    finally:
        live.kill()  # as kill -9 would leave it: the lock file stays behind
        live.wait()
    assert (run / ".lock").exists()
    accepted(args)  # the dead owner's lock is stale: taken over
    assert not (run / ".lock").exists(), "the lock is released at the end"
