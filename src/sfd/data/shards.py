"""Safetensors shards: atomic writes, verification, and zero-copy memory-mapped reads.

A shard set is a directory::

    DIR/meta.json                   # written last, atomically: describes the whole set
    DIR/shard-00000.safetensors     # tensors whose first axis is the sample axis
    DIR/shard-00000.json            # sidecar: count + sha256, written after the shard
    ...

A shard counts as finished only when its sidecar exists and agrees with the file (size, and
sha256 when verifying), so a crash loses at most the shard being written and a rerun skips
finished ones. Reads go through ``numpy.memmap`` on the safetensors data section: each shard is
opened once and random access copies only the rows asked for.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from sfd.errors import BadInputError, MismatchError, as_os_error, write_failed

_NP_DTYPES = {
    "F32": np.float32,
    "F16": np.float16,
    "F64": np.float64,
    "I64": np.int64,
    "I32": np.int32,
    "U8": np.uint8,
    "I16": np.int16,
    "BOOL": np.bool_,
}


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and an atomic rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:  # also a signal turned into an exception: no temp file left
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise write_failed(path, err, _KEPT) from err
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(Path(path), json.dumps(obj, indent=2, sort_keys=True).encode())


def refuse_other_settings(where: Path, what: str, stored: dict, settings: dict, hint: str) -> None:
    """The one check behind every resumable output (sampling jobs, extracted shards, autoencoder
    runs): ``settings`` must equal those ``stored`` by the first run (compared as JSON stores
    them), else :class:`MismatchError` names the keys that differ."""
    settings = json.loads(json.dumps(settings))
    differ = sorted(k for k in stored.keys() | settings.keys() if stored.get(k) != settings.get(k))
    if differ:
        raise MismatchError(
            f"{where} holds {what} with other settings ({', '.join(differ)}); {hint}"
        )


def claim_settings(path: Path, settings: dict, what: str, hint: str, write: bool = True) -> None:
    """Record ``settings`` at ``path`` (JSON) on the first run into its directory (when
    ``write``: the main rank); a later run must bring the same ones
    (:func:`refuse_other_settings`)."""
    path = Path(path)
    if path.exists():
        refuse_other_settings(path.parent, what, json.loads(path.read_text()), settings, hint)
    elif write:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, settings)


def atomic_save_safetensors(
    path: Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None
) -> None:
    """``safetensors.torch.save_file`` through a temporary file and an atomic rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        save_file(
            {k: v.detach().contiguous().cpu() for k, v in tensors.items()},
            str(tmp),
            metadata=dict(metadata) if metadata else None,
        )
        with open(tmp, "rb+") as f:
            _sort_metadata(f)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:  # safetensors reports a failed write as its own error type
        tmp.unlink(missing_ok=True)
        cause = as_os_error(err)
        if cause is None:
            raise
        raise write_failed(path, cause, _KEPT) from err


_KEPT = "the previous version, if any, is unchanged and no partial file was left"


def atomic_files(directory: Path, write: Callable[[Path], None], kept: str = _KEPT) -> None:
    """``write(tmp)`` fills a temporary directory inside ``directory`` (e.g. a library's
    ``save_pretrained``); its files then replace those of ``directory``, one atomic rename
    each. A failed write removes the temporary directory and is one :class:`WriteError`."""
    directory = Path(directory)
    tmp = directory / f".save.tmp{os.getpid()}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        write(tmp)
        for item in sorted(tmp.iterdir()):
            os.replace(item, directory / item.name)
        tmp.rmdir()
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        cause = as_os_error(err)
        if cause is None:
            raise
        raise write_failed(directory, cause, kept) from err


def _sort_metadata(f) -> None:
    """Rewrite a just-saved safetensors header with its ``__metadata__`` keys sorted.

    safetensors writes the metadata map in a random per-process order (safetensors issue
    #584), so saving the same tensors and metadata twice gave different bytes. Sorting the keys
    changes no length and no value; the header is rewritten in place only if the re-encoded
    JSON has exactly the original length and content (else the file is left as written).
    """
    (n,) = struct.unpack("<Q", f.read(8))
    raw = f.read(n)
    header = json.loads(raw)
    meta = header.get("__metadata__")
    if not meta:
        return
    header["__metadata__"] = dict(sorted(meta.items()))
    body = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    stripped = raw.rstrip(b" ")
    if len(body) != len(stripped) or json.loads(body) != json.loads(stripped):
        return
    f.seek(8)
    f.write(body)


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    buf = bytearray(chunk)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


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


class MappedShard:
    """Zero-copy view of one safetensors file: ``shard[name]`` is a read-only numpy memmap."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        size = self.path.stat().st_size
        with open(self.path, "rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                raise BadInputError(f"{self.path} is not a safetensors file (truncated header)")
            (header_len,) = struct.unpack("<Q", raw)
            if header_len > size - 8:
                raise BadInputError(f"{self.path} is truncated or not a safetensors file")
            try:
                header = json.loads(f.read(header_len))
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise BadInputError(f"{self.path} has a corrupt safetensors header") from None
        if not isinstance(header, dict):
            raise BadInputError(f"{self.path} has a corrupt safetensors header")
        self.metadata = header.pop("__metadata__", {}) or {}
        base = 8 + header_len
        self.arrays: dict[str, np.ndarray] = {}
        for name, spec in header.items():
            try:
                kind, (start, end) = spec["dtype"], spec["data_offsets"]
                shape = tuple(int(n) for n in spec["shape"])
            except (KeyError, TypeError, ValueError):
                raise BadInputError(f"{self.path}: corrupt header entry for {name!r}") from None
            if kind not in _NP_DTYPES:
                raise BadInputError(f"{self.path}: tensor {name!r} has unsupported dtype {kind}")
            if base + end > size:
                raise BadInputError(
                    f"{self.path} is truncated (tensor {name!r} ends past the file)"
                )
            dtype = np.dtype(_NP_DTYPES[kind])
            if end - start != dtype.itemsize * int(np.prod(shape, dtype=np.int64)):
                raise BadInputError(f"{self.path}: tensor {name!r} has a corrupt size")
            if end == start:
                self.arrays[name] = np.zeros(shape, dtype)
                continue
            self.arrays[name] = np.memmap(
                self.path, dtype=dtype, mode="r", offset=base + start, shape=shape
            )

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]

    def __contains__(self, name: str) -> bool:
        return name in self.arrays

    def __len__(self) -> int:
        return int(next(iter(self.arrays.values())).shape[0]) if self.arrays else 0


def rows(array: np.ndarray, index: np.ndarray) -> torch.Tensor:
    """Copy the rows ``index`` (sorted or not) of a memmap into a new torch tensor."""
    return torch.from_numpy(np.ascontiguousarray(array[index]))
