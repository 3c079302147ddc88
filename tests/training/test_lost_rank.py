"""A dying rank does not hang the others: two ``sfd train`` processes on CPU (gloo, launched
as torchrun would, without its agent, so the survivor must notice by itself); rank 1 is
SIGKILLed after the first checkpoint; rank 0 exits within seconds with one line naming rank 1
(exit 10), and a rerun resumes from the last checkpoint. The long version, through torchrun
with restarts and reruns, bitwise against an uninterrupted run, is the crash campaign's
``train-ddp`` / ``sample-ddp`` / ``extract-ddp`` chains (scripts/crash_campaign.py)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from sfd import distributed
from sfd.config import Config
from sfd.errors import EXIT_LOST_RANK
from sfd.training.checkpoint import list_checkpoints, read_checkpoint
from sfd.training.loop import train
from tests.helpers import tiny_config, tiny_train_args, write_synthetic_latents


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_killed_rank_is_named_by_the_survivor_and_a_rerun_resumes(tmp_path):
    data = write_synthetic_latents(tmp_path / "lat", tiny_config(), count=8, shard_size=4)
    run = tmp_path / "run"
    args = [
        sys.executable,
        "-m",
        "sfd",
        *tiny_train_args(data, run, 100000, "train.ckpt_every=2"),
    ]
    port, procs = _port(), []
    for rank in (0, 1):
        env = {
            **os.environ,
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": "2",
            "LOCAL_WORLD_SIZE": "2",
            "OMP_NUM_THREADS": "1",
            "SFD_COLLECTIVE_TIMEOUT": "60",
        }
        procs.append(
            subprocess.Popen(
                [str(a) for a in args],
                env=env,
                stderr=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                text=True,
            )
        )
    try:
        deadline = time.monotonic() + 60
        while not list_checkpoints(run) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert list_checkpoints(run), "no checkpoint within 60 s"
        procs[1].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        _, err = procs[0].communicate(timeout=30)
        waited = time.monotonic() - killed
    finally:
        for p in procs:
            p.kill()
            p.wait()
    lines = [line for line in err.splitlines() if line.startswith("Error:")]
    assert procs[0].returncode == EXIT_LOST_RANK, err[-2000:]
    assert len(lines) == 1 and "rank 0 of 2 stopped: lost rank 1 (" in lines[0], lines
    assert "rerun the same command" in lines[0] and waited < 20, waited
    step = read_checkpoint(run).step
    cfg = Config.from_dict(json.loads((run / "config.json").read_text()))
    result = train(cfg, data, run, max_steps=1, progress=False)  # a rerun, here on one process
    assert result.step == step + 1
    assert not [p for p in run.rglob("*") if ".tmp" in p.name or p.name == ".lock"]


def test_the_collective_timeout_is_read_from_the_environment(monkeypatch):
    monkeypatch.delenv("SFD_COLLECTIVE_TIMEOUT", raising=False)
    assert distributed.collective_timeout() == 1800
    monkeypatch.setenv("SFD_COLLECTIVE_TIMEOUT", "45")
    assert distributed.collective_timeout() == 45
    for bad in ("0", "-3", "soon", "nan"):
        monkeypatch.setenv("SFD_COLLECTIVE_TIMEOUT", bad)
        with pytest.raises(ValueError, match="SFD_COLLECTIVE_TIMEOUT must be"):
            distributed.collective_timeout()
