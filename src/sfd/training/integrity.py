"""Integrity of what training reads: shard sets checked once per run, and ``sfd verify``.

A run checks its whole data set (latent or feature shards) against the sizes and sha256
digests ``meta.json`` records, before its first step; the work is split over ranks (rank r
takes shards r, r + W, ...) and over threads within a rank, and every rank refuses alike.
The check is recorded in ``RUN/data_check.json`` (bytes, seconds, GB/s, or that
``--no-verify`` skipped it); a resumed run checks again only if a shard's size or
modification time changed since (a rewritten or replaced copy), so a run pays the full cost
once. Incremental checking (each shard the first time a batch touches it) would cost as much:
the global shuffle touches nearly every shard within the first few dozen steps, and it would
put the hashing on the training step's path, unevenly over ranks (docs/RELIABILITY.md).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

from tqdm import tqdm

from sfd import distributed as D
from sfd.data.shards import IntegrityReport, Recorded, check_files, recorded_shards
from sfd.data.tensor_files import atomic_write_json
from sfd.errors import BadInputError, MissingInputError
from sfd.training.checkpoint import (
    CHECKSUMS,
    damaged_checkpoint_hint,
    list_checkpoints,
    recorded_files,
)

log = logging.getLogger("sfd.verify")

RECORD = "data_check.json"
FIX = {
    "sfd-latents": "rerun the `sfd extract` that wrote the set, with the same --out (it "
    "rewrites damaged shards), or restore the file from a good copy",
    "sfd-features": "rerun the `sfd extract-features` that wrote the set, with the same --out "
    "(it rewrites damaged shards), or restore the file from a good copy",
}


def hash_threads() -> int:
    """Threads per rank for hashing: the CPUs of this node shared by its ranks, at most 8."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, min(8, (os.cpu_count() or 1) // max(1, local)))


def _fingerprint(entries: list[Recorded], meta: Path) -> dict:
    """What must be unchanged for an earlier check to still count: meta.json's digest and
    every shard's size and modification time."""
    stamp = {}
    for e in entries:
        st = e.path.stat() if e.path.is_file() else None
        stamp[e.path.name] = [st.st_size, st.st_mtime_ns] if st else None
    return {"meta_sha256": hashlib.sha256(meta.read_bytes()).hexdigest(), "shards": stamp}


def _history(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / RECORD
    try:
        return list(json.loads(path.read_text())["checks"])
    except (OSError, ValueError, KeyError, TypeError):
        return []


def verify_data(data_dir: Path, run_dir: Path, verify: bool = True, progress: bool = True) -> None:
    """Check the shard set ``data_dir`` once for the run in ``run_dir`` (all ranks call);
    a damaged shard is a :class:`BadInputError` on every rank, before any step."""
    data_dir, run_dir = Path(data_dir), Path(run_dir)
    entries = recorded_shards(data_dir)
    kind = json.loads((data_dir / "meta.json").read_text()).get("format", "sfd-latents")
    stamp = _fingerprint(entries, data_dir / "meta.json")
    history = _history(run_dir) if D.is_main() else []
    done = D.broadcast_object(
        any(h.get("verified") and h.get("fingerprint") == stamp for h in history)
    )
    record = {"data": str(data_dir.resolve()), "fingerprint": stamp, "time": time.time()}
    if done:
        return
    if not verify:
        if D.is_main():
            log.warning("data %s NOT verified (--no-verify); recorded in %s", data_dir, RECORD)
            record.update(verified=False, skipped="--no-verify")
            atomic_write_json(run_dir / RECORD, {"checks": [*history, record]})
        return
    report = _check_split(entries, f"verify {data_dir.name}", progress)
    if report.problems:
        more = f" (and {len(report.problems) - 1} more damaged)" if len(report.problems) > 1 else ""
        fix = FIX.get(kind, FIX["sfd-latents"])
        raise BadInputError(f"{report.problems[0]}{more}; nothing was trained on it: {fix}")
    if D.is_main():
        msg = "data %s verified: %d shards, %.2f GB in %.1f s (%.2f GB/s)"
        log.info(msg, data_dir, report.files, report.bytes / 1e9, report.seconds, report.gb_per_s)
        record.update(verified=True, **_summary(report), world_size=D.world_size())
        atomic_write_json(run_dir / RECORD, {"checks": [*history, record]})


def _summary(report: IntegrityReport) -> dict:
    return {
        "files": report.files,
        "bytes": report.bytes,
        "seconds": round(report.seconds, 3),
        "gb_per_s": round(report.gb_per_s, 3),
        "threads_per_rank": hash_threads(),
        "unrecorded": report.unrecorded,
    }


def _check_split(entries: list[Recorded], desc: str, progress: bool) -> IntegrityReport:
    """Rank r checks entries r, r + W, ...; the reports are merged on every rank."""
    mine = entries[D.rank() :: D.world_size()]
    bar = tqdm(
        total=sum(e.bytes or 0 for e in mine),
        desc=desc,
        unit="B",
        unit_scale=True,
        disable=not (progress and D.is_main()),
    )
    t0 = time.perf_counter()
    with bar:
        part = check_files(mine, hash_threads(), bar.update)
    parts = D.all_gather_object(part)
    return IntegrityReport(
        files=sum(p.files for p in parts),
        bytes=sum(p.bytes for p in parts),
        seconds=time.perf_counter() - t0,
        problems=[q for p in parts for q in p.problems],
        unrecorded=[q for p in parts for q in p.unrecorded],
    )


# --------------------------------------------------------------------------------------------
# `sfd verify PATH`: a latent set, a feature set, a checkpoint or a run.


def verify_path(path: Path) -> list[tuple[str, IntegrityReport]]:
    """(what, report) for everything ``path`` holds that has recorded digests: a shard set
    (``meta.json``), a checkpoint (``checksums.json``) or a run (each checkpoint)."""
    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"{path} does not exist")
    if (path / "meta.json").is_file():
        kind = json.loads((path / "meta.json").read_text()).get("format", "shard set")
        return [(f"{kind} {path}", check_files(recorded_shards(path), hash_threads()))]
    if (path / "ema.safetensors").is_file():
        return [(f"checkpoint {path}", _check_checkpoint(path))]
    found = list_checkpoints(path)
    if not found:
        raise BadInputError(
            f"{path} is neither a shard set (meta.json), a checkpoint (ema.safetensors) nor a "
            f"run (checkpoints/step-*)"
        )
    return [(f"checkpoint {p}", _check_checkpoint(p)) for p in found]


def _check_checkpoint(path: Path) -> IntegrityReport:
    recorded = recorded_files(path)
    if recorded is None:  # written before checksums: every file unchecked
        unchecked = [Recorded(p, None, None) for p in sorted(path.rglob("*")) if p.is_file()]
        return check_files(unchecked)
    report = check_files(recorded, hash_threads())
    if report.problems:
        report.problems[-1] += f"; {damaged_checkpoint_hint(path)}"
    return report


def describe(what: str, report: IntegrityReport) -> list[str]:
    """Lines for ``sfd verify``: ``intact`` or ``DAMAGED`` and one line per problem."""
    size = f"{report.files} files, {report.bytes / 1e6:.1f} MB, {report.gb_per_s:.2f} GB/s"
    if report.problems:
        return [f"DAMAGED  {what} ({size})", *[f"  {p}" for p in report.problems]]
    if report.unrecorded and len(report.unrecorded) == report.files:
        return [f"UNCHECKED {what}: no digests recorded ({CHECKSUMS} or sidecars absent)"]
    return [f"intact   {what} ({size})"]
