"""The table of ``scripts/ablation_compile.sh``: does torch.compile pay on one ablation-grid job?

For each directory under ``runs/speed``: the job's wall time (training + 7 evaluations), its
training time (``config.json`` written at the start of training to the step-1000 checkpoint),
the first 25 steps (compilation included), the steady img/s (median of the logged rates after
step 100), FD_FMNIST at each evaluation, and whether its final EMA weights equal those of its
rerun (``NAME_again``), tensor for tensor (a digest of the tensors' bytes).

    python scripts/ablation_compile.py [--root runs/speed] [--json experiments/perf/...json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import statistics
from pathlib import Path

import torch

RUN = Path("runs/sfd/seed0")
FINAL = RUN / "checkpoints/step-0001000/ema.safetensors"


def stamp(line: str) -> float:
    """Seconds of a log line's ``YYYY-MM-DD HH:MM:SS,mmm`` prefix."""
    return dt.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()


def weights_digest(path: Path) -> str:
    """sha256 of the tensors (sorted names, raw bytes): files written before sfd sorted the
    metadata keys (docs/RELIABILITY.md) differ in their header from one process to the next."""
    from safetensors.torch import load_file

    h = hashlib.sha256()
    for name, t in sorted(load_file(path).items()):
        h.update(name.encode())
        h.update(t.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def job(root: Path, name: str, wall: dict[str, int]) -> dict:
    d = root / name
    log = Path("runs/logs") / f"speed_{name}.log"
    lines = log.read_text().splitlines()
    steps = [ln for ln in lines if "sfd.train INFO step " in ln]
    start = (d / RUN / "config.json").stat().st_mtime
    end = (d / FINAL).stat().st_mtime
    rates = [
        float(ln.split("img_per_s=")[1].split()[0])
        for ln in steps
        if int(ln.split("step ")[1].split()[0]) > 100
    ]
    fd = {}
    for f in sorted((d / "results/sfd/seed0").glob("*.json")):
        r = json.loads(f.read_text())
        fd[f"step{r['step']}_cfg{r['cfg_scale']:g}"] = r["fd_fmnist"]
    return {
        "wall_s": wall.get(name),
        "train_s": round(end - start, 1),
        "first_25_steps_s": round(stamp(steps[0]) - start, 1),
        "steady_img_per_s": round(statistics.median(rates), 1),
        "fd_fmnist": fd,
        "final_ema_sha256": weights_digest(d / FINAL),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path("runs/speed"))
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    wall = {}
    wall_file = args.root / "wall_seconds.txt"
    if wall_file.exists():
        for ln in wall_file.read_text().split("\n"):
            if ln.strip():
                name, sec = ln.split()
                wall[name] = int(sec)
    names = [
        n
        for n in ("eager", "eager_again", "blocks", "blocks_again", "loss", "loss_again")
        if (args.root / n / FINAL).exists()
    ]
    jobs = {n: job(args.root, n, wall) for n in names}
    print(
        "| job | wall s | train s | first 25 steps s | steady img/s | FD_FMNIST 1000 (cfg 1/2/4) "
        "| final EMA sha256 |"
    )
    print("|---|---|---|---|---|---|---|")
    for n, j in jobs.items():
        f = j["fd_fmnist"]
        fds = " / ".join(f"{f.get(f'step1000_cfg{w}', float('nan')):.4f}" for w in (1, 2, 4))
        print(
            f"| {n} | {j['wall_s']} | {j['train_s']} | {j['first_25_steps_s']} | "
            f"{j['steady_img_per_s']} | {fds} | `{j['final_ema_sha256']}` |"
        )
    for n in names:
        if n.endswith("_again"):
            a, b = jobs[n.removesuffix("_again")], jobs[n]
            same = a["final_ema_sha256"] == b["final_ema_sha256"]
            print(f"{n.removesuffix('_again')} rerun gives the same weights: {same}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(jobs, indent=2) + "\n")


if __name__ == "__main__":
    main()
