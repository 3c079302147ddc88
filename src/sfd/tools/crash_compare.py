"""The crash campaign's checks: a killed-and-rerun output against an uninterrupted one, bit for
bit (``scripts/crash_campaign.py``; docs/RELIABILITY.md)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from sfd.training.checkpoint import list_checkpoints
from sfd.training.logs import read_log


def compare_files(*names):
    def compare(ref: Path, got: Path) -> list[str]:
        def same(n):
            return (got / n).exists() and (got / n).read_bytes() == (ref / n).read_bytes()

        return [f"{n} differs or is missing" for n in names if not same(n)]

    return compare


TIMED_KEYS = ("seconds", "hardware", "img_per_s", "elapsed")  # differ between any two runs


def _untimed(value):
    """A JSON value without the keys that record wall-clock time or the host."""
    if isinstance(value, dict):
        return {k: _untimed(v) for k, v in value.items() if not any(t in k for t in TIMED_KEYS)}
    if isinstance(value, list):
        return [_untimed(v) for v in value]
    return value


def _safetensors(path: Path) -> tuple:
    """A safetensors file's content: its metadata and tensors. Not its bytes: the library writes
    the metadata in hash-map order, which differs from one process to the next."""
    with safe_open(str(path), "pt") as f:
        return f.metadata(), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118


def _same(a, b) -> bool:
    if isinstance(a, tuple):
        return (
            a[0] == b[0]
            and a[1].keys() == b[1].keys()
            and all(torch.equal(a[1][k], b[1][k]) for k in a[1])
        )
    return a == b


# logs; the record of a run's data check (when, how fast, the shards' modification times)
SKIPPED = ("log.jsonl", "data_check.json")


def _tree(root: Path) -> dict:
    """Every file under ``root`` but logs, data-check records and TensorBoard events: path ->
    content. JSON files without wall-clock times and with the output directory's own path
    replaced by ``OUT``."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if not p.is_file() or "tb" in rel.parts or p.suffix == ".log" or p.name in SKIPPED:
            continue
        if p.suffix == ".json":
            out[str(rel)] = _untimed(json.loads(p.read_text().replace(str(root), "OUT")))
        elif p.suffix == ".safetensors":
            out[str(rel)] = _safetensors(p)
        else:
            out[str(rel)] = p.read_bytes()
    return out


def compare_tree(ref: Path, got: Path) -> list[str]:
    """Same files, byte for byte (times and logs aside); ``log.jsonl`` files: same steps."""
    a, b = _tree(ref), _tree(got)
    problems = [f"{n} missing" for n in sorted(a.keys() - b.keys())]
    problems += [f"{n} extra" for n in sorted(b.keys() - a.keys())]
    problems += [f"{n} differs" for n in sorted(a.keys() & b.keys()) if not _same(a[n], b[n])]
    for log in sorted(ref.rglob("log.jsonl")):
        mine = got / log.relative_to(ref)
        want = [r["step"] for r in read_log(log.parent)]
        have = [r["step"] for r in read_log(mine.parent)] if mine.exists() else None
        if have != want:
            problems.append(f"{log.relative_to(ref)} steps {have} != {want}")
    return problems


def leftovers(root: Path) -> list[str]:
    return [str(p) for p in root.rglob("*") if ".tmp" in p.name or p.name == ".lock"]


def compare_train(ref: Path, got: Path) -> list[str]:
    problems = []
    a, b = list_checkpoints(ref)[-1], list_checkpoints(got)[-1]
    if a.name != b.name:
        problems.append(f"final checkpoint {b.name} != {a.name}")
    for name in ("model", "ema", "optimizer"):
        x, y = load_file(str(a / f"{name}.safetensors")), load_file(str(b / f"{name}.safetensors"))
        if x.keys() != y.keys() or not all(torch.equal(x[k], y[k]) for k in x):
            problems.append(f"{name} weights differ")
    steps = [r["step"] for r in read_log(got)]
    want = [r["step"] for r in read_log(ref)]
    if steps != want:
        problems.append(f"log.jsonl steps {steps} != {want}")
    return problems


def compare_sample(ref: Path, got: Path) -> list[str]:
    problems = []
    names = sorted(p.name for p in (ref / "images").iterdir())
    if sorted(p.name for p in (got / "images").iterdir()) != names:
        problems.append("image files differ (lost, partial or extra)")
    for n in names:
        if (got / "images" / n).exists() and (got / "images" / n).read_bytes() != (
            ref / "images" / n
        ).read_bytes():
            problems.append(f"{n} differs")
    if (got / "samples.npz").read_bytes() != (ref / "samples.npz").read_bytes():
        problems.append("samples.npz differs")
    return problems
