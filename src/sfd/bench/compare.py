"""``sfd bench --compare REF``: this tree against another version of sfd, interleaved in one run.

Design (so that a ratio means what it says):

- each side runs in its OWN worker process (:mod:`sfd.bench.worker`) whose ``PYTHONPATH`` names
  only that side's source tree, so each imports its own ``sfd`` (no shared module state) and
  builds the step with its own code, on the same synthetic batch (seed 0) and config;
- the two workers never run at the same time: the parent asks one to run the function once,
  waits for it, then asks the other, alternating which side goes first (A B, B A, ...), so slow
  drifts of a shared machine hit both alike; an idle worker blocks on its stdin;
- each worker times its own call (``perf_counter``, device-synchronised), after ``warmup``
  calls each (compilation included there); the result is the median of each side, their
  ratio (``ref / ours``: > 1 means this tree is faster) and each side's peak memory per image
  (process peak RSS on CPU, allocator peak on CUDA);
- the spread: each round's two calls ran back to back, so ``ref / ours`` of one round is a
  ratio measured under one machine state. Their quartiles (``ratio_q1`` .. ``ratio_q3``) show
  how far a ratio moves within the run; a difference inside them is noise;
- a pair of processes can also be faster or slower as a whole (where their memory and threads
  landed): ``repeats`` starts a fresh pair of workers that many times (which side starts first
  alternating too), pools their rounds and lists each pair's own ratio (``repeat_ratios``).

``REF`` is a source tree (a directory holding ``src/sfd`` or ``sfd``) or a git revision of
the repository this tree is in (exported with ``git archive`` into a temporary directory, so
the repository is not touched).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import asdict, dataclass
from io import BytesIO
from pathlib import Path

import sfd

WORKER = Path(__file__).with_name("worker.py")


@dataclass
class CompareResult:
    preset: str
    mode: str
    batch_size: int
    threads: int
    ours: str
    ref: str
    ours_ms: float
    ref_ms: float
    ratio: float  # ref_ms / ours_ms: > 1 means this tree is faster
    ratio_q1: float  # quartiles of the per-round ratios (each round: one call of each side)
    ratio_q3: float
    repeat_ratios: list[float]  # each pair of fresh workers' own ratio (process-level spread)
    ours_peak_mb_per_image: float
    ref_peak_mb_per_image: float
    iters: int  # rounds per pair of workers
    repeats: int

    def table(self) -> str:
        rows = [
            (k, f"{v:.4g}" if isinstance(v, float) else str(v)) for k, v in asdict(self).items()
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def this_tree() -> Path:
    """The directory that holds this ``sfd`` package (put on ``PYTHONPATH``)."""
    return Path(sfd.__file__).resolve().parents[1]


def resolve_tree(ref: str, scratch: Path) -> Path:
    """The package root of ``ref``: a source tree on disk, or a git revision exported."""
    path = Path(ref)
    if path.is_dir():
        for root in (path / "src", path):
            if (root / "sfd" / "__init__.py").is_file():
                return root.resolve()
        raise ValueError(f"{ref} holds no sfd package (looked for src/sfd and sfd)")
    repo = this_tree().parent
    try:
        tar = subprocess.run(
            ["git", "-C", str(repo), "archive", ref, "src"],
            check=True,
            capture_output=True,
        ).stdout
    except (subprocess.CalledProcessError, FileNotFoundError) as err:
        raise ValueError(f"{ref!r} is neither a directory nor a git revision of {repo}") from err
    with tarfile.open(fileobj=BytesIO(tar)) as tf:
        tf.extractall(scratch, filter="data")
    return scratch / "src"


class Worker:
    """One worker process importing ``sfd`` from ``tree``."""

    def __init__(self, tree: Path, spec: dict, log: Path) -> None:
        env = {**os.environ, "PYTHONPATH": str(tree)}
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # an idle worker must not spin
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-P", "-c", WORKER.read_text(), json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log.open("w"),
            env=env,
            text=True,
        )
        self.info: dict = {}

    def wait_ready(self) -> None:
        self.info = self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            raise RuntimeError(f"bench worker failed:\n{self.log.read_text()[-3000:]}")
        return json.loads(line)

    def run(self) -> dict:
        self.proc.stdin.write("run\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)


def median(xs: list[float]) -> float:
    return quantile(xs, 0.5)


def quantile(xs: list[float], q: float) -> float:
    """The q-quantile of ``xs``, linear between order statistics (numpy's default)."""
    s = sorted(xs)
    pos = q * (len(s) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def _alternate(workers: dict, warmup: int, iters: int) -> tuple[dict, dict]:
    """Each worker's call times (after ``warmup``) and peak memory, one call at a time, the
    first side alternating round by round."""
    for w in workers.values():  # both start (import, build) at once; timing does not
        w.wait_ready()
    times: dict[str, list[float]] = {"ours": [], "ref": []}
    peak = {"ours": 0, "ref": 0}
    for i in range(warmup + iters):
        for side in ("ours", "ref") if i % 2 == 0 else ("ref", "ours"):
            got = workers[side].run()
            peak[side] = max(peak[side], got["peak_bytes"])
            if i >= warmup:
                times[side].append(got["sec"])
    return times, peak


def _repeat(trees: dict, specs: dict, scratch: Path, warmup: int, iters: int, repeats: int):
    """``repeats`` pairs of fresh workers (which side starts first alternating): the pooled
    call times, each side's peak memory, each pair's own ratio and the threads torch used."""
    times: dict[str, list[float]] = {"ours": [], "ref": []}
    peak = {"ours": 0, "ref": 0}
    ratios = []
    for r in range(repeats):
        workers = {}
        try:
            for side in ("ours", "ref") if r % 2 == 0 else ("ref", "ours"):
                workers[side] = Worker(trees[side], specs[side], scratch / f"{side}{r}.log")
            got, mem = _alternate(workers, warmup, iters)
        finally:
            for w in workers.values():
                w.close()
        ratios.append(median(got["ref"]) / median(got["ours"]))
        for side in times:
            times[side] += got[side]
            peak[side] = max(peak[side], mem[side])
    return times, peak, ratios, workers["ours"].info["threads"]


def compare(
    ref: str,
    preset: str,
    batch_size: int,
    *,
    overrides: tuple[str, ...] = (),
    ref_overrides: tuple[str, ...] | None = None,
    mode: str = "train",
    device: str = "cpu",
    threads: int = 0,
    warmup: int = 2,
    iters: int = 5,
    repeats: int = 1,
) -> CompareResult:
    """Median time of ``mode`` ("train" step or "forward") in this tree and in ``ref``, over
    ``repeats`` pairs of fresh worker processes of ``iters`` rounds each."""
    if mode not in ("train", "forward"):
        raise ValueError(f"mode must be 'train' or 'forward'; got {mode!r}")
    if repeats < 1 or iters < 1:
        raise ValueError(f"repeats and iters must be >= 1; got {repeats} and {iters}")
    sets = {
        "ours": list(overrides),
        "ref": list(overrides if ref_overrides is None else ref_overrides),
    }
    base = dict(preset=preset, batch_size=batch_size, mode=mode, device=device, threads=threads)
    specs = {side: {**base, "overrides": sets[side]} for side in sets}
    with tempfile.TemporaryDirectory(prefix="sfd-compare-") as tmp:
        scratch = Path(tmp)
        trees = {"ours": this_tree(), "ref": resolve_tree(ref, scratch / "ref")}
        times, peak, ratios, used = _repeat(trees, specs, scratch, warmup, iters, repeats)
    ours, theirs = median(times["ours"]), median(times["ref"])
    rounds = [r / o for o, r in zip(times["ours"], times["ref"], strict=True)]
    per_image = {k: v / batch_size / 2**20 for k, v in peak.items()}
    return CompareResult(
        preset=preset,
        mode=mode,
        batch_size=batch_size,
        threads=used,
        ours=f"{trees['ours']} {' '.join(sets['ours'])}".strip(),
        ref=f"{ref} {' '.join(sets['ref'])}".strip(),
        ours_ms=1e3 * ours,
        ref_ms=1e3 * theirs,
        ratio=theirs / ours,
        ratio_q1=quantile(rounds, 0.25),
        ratio_q3=quantile(rounds, 0.75),
        repeat_ratios=[round(x, 4) for x in ratios],
        ours_peak_mb_per_image=per_image["ours"],
        ref_peak_mb_per_image=per_image["ref"],
        iters=iters,
        repeats=repeats,
    )
