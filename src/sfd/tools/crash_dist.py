"""The crash campaign's distributed chains (docs/RELIABILITY.md): ``torchrun`` with 2 CPU
processes (gloo) of ``sfd train``, ``sfd sample`` and ``sfd extract``, one rank SIGKILLed.

    python scripts/crash_campaign.py --commands train-ddp,sample-ddp,extract-ddp --kills 5 \\
        --out /tmp/campaign

For each command: an uninterrupted 2-process reference; then chains on one output directory.
A kill is a SIGKILL to one worker (rank 0 or 1, drawn) at a uniformly random moment between
the reference's first output and its last (while its work is done, not while Python and torch
start or exit). Chains alternate between the two ways back:

- ``torchrun --max-restarts 1``: torchrun stops the other rank, starts both again, and they
  resume; the chain is checked when torchrun exits 0;
- ``--max-restarts 0``: torchrun exits after the kill and the campaign reruns the command,
  killed again, ... until a run finishes before its kill moment; then the chain is checked.

Recorded per kill: the rank killed, the moment, how long the surviving rank took to exit
(``survivor_exit_s``), whether it said why in one ``Error:`` line and whether torchrun's report
named the killed rank. Checked per chain against the reference, as the one-process chains:
``train`` final model, EMA and optimizer bitwise equal and every log step once; ``sample``
every PNG and ``samples.npz`` byte-identical (no image lost or written twice); ``extract``
(96 images, shards of 4) every shard and record (no shard duplicated); no ``.tmp`` file or
lock left.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from sfd.tools.crash_commands import extract_args, sample_args, setup, train_args
from sfd.tools.crash_compare import compare_sample, compare_train, compare_tree, leftovers

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def torchrun(args: list, restarts: int) -> list[str]:
    """``torchrun ... -m sfd -- ARGS``: without ``--`` torchrun's parser takes ``--num`` for an
    abbreviation of its ``--numa-binding`` and stops."""
    return [*TORCHRUN, "--max-restarts", str(restarts), "-m", "sfd", "--", *[str(a) for a in args]]


def _workers(agent: int) -> dict[int, int]:
    """rank -> pid of the agent's live worker processes (read from /proc)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid != agent:
                continue
            env = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        for item in env:
            if item.startswith(b"RANK="):
                found[int(item[5:])] = int(entry.name)
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _stop(p: subprocess.Popen) -> None:
    """The agent and any worker it left (workers run in their own sessions)."""
    for pid in _workers(p.pid).values():
        os.kill(pid, signal.SIGKILL)
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGKILL)
    p.wait()


def reference(cmd: list[str], env: dict, log: Path, out: Path, first: str, last: str) -> tuple:
    """(seconds, when the first output matching ``first`` appeared, when ``last`` did) of an
    uninterrupted run: the window in which its work is done."""
    t0, seen, done = time.perf_counter(), None, None
    with open(log, "w") as err:
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        while p.poll() is None:
            now = time.perf_counter() - t0
            if seen is None and any(out.glob(first)):
                seen = now
            if done is None and any(out.glob(last)):
                done = now
            time.sleep(0.05)
    if p.returncode != 0:
        raise RuntimeError(f"reference {cmd} failed: {log.read_text()[-2000:]}")
    total = time.perf_counter() - t0
    return total, seen if seen is not None else 0.1 * total, done if done is not None else total


def invoke(cmd: list[str], env: dict, kill_at: float | None, rng, log: Path) -> dict:
    """Run ``cmd``; at ``kill_at`` s SIGKILL one worker (rank drawn). What happened."""
    t0 = time.perf_counter()
    with open(log, "w") as err:
        p = subprocess.Popen(
            cmd, env=env, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True
        )
        try:
            p.wait(timeout=kill_at)
            return {"landed": False, "code": p.returncode, "seconds": time.perf_counter() - t0}
        except subprocess.TimeoutExpired:
            pass
        ranks = _workers(p.pid)
        while len(ranks) < 2 and p.poll() is None and time.perf_counter() - t0 < kill_at + 5:
            time.sleep(0.05)  # between start-ups: wait for both workers
            ranks = _workers(p.pid)
        if len(ranks) < 2:
            p.wait()
            return {"landed": False, "code": p.returncode, "seconds": time.perf_counter() - t0}
        rank = rng.choice(sorted(ranks))
        os.kill(ranks[rank], signal.SIGKILL)
        killed_at = time.perf_counter()
        other = ranks[1 - rank]
        while _alive(other) and time.perf_counter() - killed_at < 600:
            time.sleep(0.05)
        survivor = time.perf_counter() - killed_at
        try:
            p.wait(timeout=1200)
        except subprocess.TimeoutExpired:
            _stop(p)
    text = log.read_text(errors="replace")
    lines = [ln for ln in text.splitlines() if ln.startswith("Error: rank")]
    # torchrun names the failed rank in its report (no restart left) or its log line (restart)
    named = (
        re.search(
            rf"Root Cause.*?rank\s*:\s*{rank}\b|exitcode: -9\) local_rank: {rank}\b", text, re.S
        )
        is not None
    )
    return {
        "landed": True,
        "rank": rank,
        "moment_s": round(kill_at, 2),
        "survivor_exit_s": round(survivor, 2),
        "code": p.returncode,
        "survivor_line": lines[0][:300] if lines else None,
        "torchrun_named_rank": named,
        "seconds": time.perf_counter() - t0,
    }


def dist_chains(args, got: Path, compare, kills: int, window: tuple, rng, root: Path) -> dict:
    """Chains until ``kills`` kills have landed (module docstring); each checked. Kill moments
    are uniform in ``window`` (s): from the reference's first output to its last, so the kills
    land mid-work, not while Python and torch start or exit."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SFD_DEBUG": "0"}
    landed, events, problems, chains, n = 0, [], [], 0, 0
    while landed < kills and n < 6 * kills:
        restarts = chains % 2 ^ 1  # chain 0, 2, ...: torchrun restarts; 1, 3, ...: a rerun
        shutil.rmtree(got, ignore_errors=True)
        in_chain = 0
        while True:
            n += 1
            moment = rng.uniform(*window)
            res = invoke(torchrun(args(got), restarts), env, moment, rng, root / f"{n}.log")
            if res["landed"]:
                landed, in_chain = landed + 1, in_chain + 1
                events.append({**res, "max_restarts": restarts})
            if res["code"] == 0 or landed >= kills:
                break
        if res["code"] != 0:  # the last kills' chain: run it to completion
            res = invoke(torchrun(args(got), 1), env, None, rng, root / f"{n}-end.log")
        if in_chain:
            chains += 1
            problems += compare() + [f"left behind: {p}" for p in leftovers(got)]
        if res["code"] != 0:
            problems.append(f"run {n} failed: see {root / f'{n}-end.log'}")
    return {
        "kills": landed,
        "chains_checked": chains,
        "events": events,
        "max_survivor_exit_s": max((e["survivor_exit_s"] for e in events), default=None),
        "bitwise_equal": not problems,
        "problems": problems,
    }


def _more_images(root: Path, count: int) -> Path:
    """``count`` random 16 px images in two classes (the one-process chains use 24)."""
    if not root.exists():
        rng = np.random.default_rng(1)
        for i in range(count):
            (root / "ab"[i % 2]).mkdir(parents=True, exist_ok=True)
            arr = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / "ab"[i % 2] / f"{i}.png")
    return root


def campaign_dist(root: Path, commands: list[str], kills: int, rng) -> dict:
    """The ``*-ddp`` commands of the campaign (``train-ddp``, ``sample-ddp``, ``extract-ddp``)."""
    inputs = setup(root)
    images = _more_images(root / "images-ddp", 96)  # extraction long enough to be cut
    make = {  # command line, comparison, the first and the last file the work writes
        "train-ddp": (
            lambda out: train_args(inputs["data"], out),
            compare_train,
            "log.jsonl",
            "checkpoints/step-0000040",
        ),
        "sample-ddp": (
            lambda out: sample_args(inputs["trained"], inputs["decoder"], out),
            compare_sample,
            "images/*.png",
            "samples.npz",
        ),
        "extract-ddp": (
            lambda out: extract_args(images, root, out),
            compare_tree,
            "shard-*.safetensors",
            "meta.json",
        ),
    }
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SFD_DEBUG": "0"}
    results = {}
    for name in commands:
        args, compare, first, last = make[name]
        ref, got, logs = root / f"{name}-ref", root / f"{name}-killed", root / f"{name}-logs"
        for old in (ref, got, logs):
            shutil.rmtree(old, ignore_errors=True)
        logs.mkdir(parents=True)
        duration, start, end = reference(
            torchrun(args(ref), 0), env, logs / "ref.log", ref, first, last
        )
        out = dist_chains(
            args, got, lambda r=ref, g=got, c=compare: c(r, g), kills, (start, end), rng, logs
        )
        results[name] = {
            **out,
            "reference_s": round(duration, 1),
            "work_s": [round(start, 1), round(end, 1)],
        }
    return results
