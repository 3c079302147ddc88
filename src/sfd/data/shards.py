"""Shard sets: a directory of safetensors shards, written resumably and checked on read.

A shard set is a directory::

    DIR/meta.json                   # written last, atomically: describes the whole set
    DIR/shard-00000.safetensors     # tensors whose first axis is the sample axis
    DIR/shard-00000.json            # sidecar: count + sha256, written after the shard
    ...

A shard counts as finished only when its sidecar exists and agrees with the file (size, and
sha256 when verifying), so a crash loses at most the shard being written and a rerun skips
finished ones. Each file is written and read by :mod:`sfd.data.tensor_files` (atomic writes;
zero-copy ``numpy.memmap`` reads that copy only the rows asked for).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch

from sfd.data.tensor_files import atomic_save_safetensors, atomic_write_json, sha256_file
from sfd.errors import BadInputError

# --------------------------------------------------------------------------------------------
# Integrity on read: files checked against the size and sha256 recorded when they were written.


@dataclass(frozen=True)
class Recorded:
    """A file and what was recorded about it when it was written (``None``: not recorded)."""

    path: Path
    bytes: int | None
    sha256: str | None


@dataclass
class IntegrityReport:
    """What :func:`check_files` found: one problem line per damaged file (none: intact)."""

    files: int = 0
    bytes: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)
    unrecorded: list[str] = field(default_factory=list)  # files with no digest to check

    @property
    def intact(self) -> bool:
        return not self.problems

    @property
    def gb_per_s(self) -> float:
        return self.bytes / 1e9 / max(self.seconds, 1e-9)


def file_problem(entry: Recorded) -> str | None:
    """One line saying how ``entry.path`` differs from its record (missing, size, digest)."""
    path = entry.path
    if not path.is_file():
        return f"{path} is missing"
    size = path.stat().st_size
    if entry.bytes is not None and size != entry.bytes:
        return f"{path} has {size} bytes, {entry.bytes} were recorded (truncated or replaced)"
    if entry.sha256 is None:
        return None
    found = sha256_file(path)
    if found != entry.sha256:
        return f"{path} is corrupt: sha256 {found} found, {entry.sha256} expected"
    return None


def check_files(
    entries: Sequence[Recorded],
    workers: int = 1,
    progress: Callable[[int], None] | None = None,
) -> IntegrityReport:
    """Check every file against its record, ``workers`` files at a time (hashlib releases the
    GIL, so threads hash in parallel); ``progress(n_bytes)`` after each file."""
    report = IntegrityReport(files=len(entries))
    t0 = time.perf_counter()

    def one(entry: Recorded) -> tuple[str | None, int]:
        problem = file_problem(entry)
        size = entry.path.stat().st_size if entry.path.is_file() else 0
        if progress is not None:
            progress(size)
        return problem, size

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for entry, (problem, size) in zip(entries, pool.map(one, entries), strict=True):
            report.bytes += size
            if problem:
                report.problems.append(problem)
            elif entry.sha256 is None:
                report.unrecorded.append(str(entry.path))
    report.seconds = time.perf_counter() - t0
    return report


def recorded_shards(directory: Path) -> list[Recorded]:
    """The shards a set's ``meta.json`` names, with their recorded size and sha256 (the
    sidecar's digest where ``meta.json`` has none). Names must be plain file names."""
    directory = Path(directory)
    meta_path = directory / "meta.json"
    try:
        shards = json.loads(meta_path.read_text())["shards"]
        names = [info["file"] for info in shards]
    except FileNotFoundError:
        raise BadInputError(f"{directory} is not a shard set: no meta.json") from None
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
        raise BadInputError(f"{meta_path} does not list its shards: {err}") from None
    out = []
    for info, name in zip(shards, names, strict=True):
        if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
            raise BadInputError(f"{meta_path} names the shard {name!r}: not a plain file name")
        path = directory / name
        digest = info.get("sha256")
        if digest is None and path.with_suffix(".json").is_file():
            try:
                digest = json.loads(path.with_suffix(".json").read_text()).get("sha256")
            except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
                digest = None
        size = info.get("bytes")
        out.append(Recorded(path, size if isinstance(size, int) else None, digest))
    return out


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.safetensors"


def write_shard(directory: Path, index: int, tensors: Mapping[str, torch.Tensor]) -> dict:
    """Write shard ``index`` of a set atomically, then its sidecar. Returns the sidecar dict."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    counts = {k: int(v.shape[0]) for k, v in tensors.items()}
    if len(set(counts.values())) != 1:
        raise ValueError(f"all tensors of a shard need the same number of rows; got {counts}")
    path = directory / shard_name(index)
    atomic_save_safetensors(path, tensors)
    info = {
        "file": path.name,
        "count": next(iter(counts.values())),
        "bytes": path.stat().st_size,
        "sha256": sha256_file(path),
    }
    atomic_write_json(path.with_suffix(".json"), info)
    return info


def finished_shard(directory: Path, index: int, verify: bool = True) -> dict | None:
    """The sidecar of shard ``index`` if the shard is complete (and its hash matches), else None."""
    path = Path(directory) / shard_name(index)
    side = path.with_suffix(".json")
    if not (path.exists() and side.exists()):
        return None
    try:
        info = json.loads(side.read_text())
    except json.JSONDecodeError:
        return None
    if path.stat().st_size != info.get("bytes"):
        return None
    if verify and sha256_file(path) != info.get("sha256"):
        return None
    return info
