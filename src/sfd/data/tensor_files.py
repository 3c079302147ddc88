"""Tensor files on disk, one file at a time: the only places sfd writes or reads tensors.

Writes are atomic (a temporary file, fsync, rename), so a crash or a full disk leaves the previous
version intact and no partial file; a failed write is one :class:`~sfd.errors.WriteError`.
Safetensors headers are written with their metadata keys sorted, so the same tensors give the
same bytes. Reads name the file in every failure: a missing file, a truncated one, another
format, or a pickle whose loading could run code (refused: ``weights_only=True``).
:class:`MappedShard` reads a safetensors file without copying it (``numpy.memmap``).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import pickletools
import shutil
import struct
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from sfd.errors import (
    BadInputError,
    MissingInputError,
    UnsafeFileError,
    as_os_error,
    first_line,
    write_failed,
)

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


# --------------------------------------------------------------------------------------------
# Writing: atomic, reproducible bytes.


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
# Reading: every failure names the file.


def load_torch_file(path: str | Path, what: str = "tensor file") -> Any:
    """``torch.load(weights_only=True)`` of ``path``; refuses code, names the file on failure."""
    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"{what} {path} does not exist")
    if path.is_dir():
        raise BadInputError(f"{what} {path} is a directory; expected a file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        code = _code_globals(path)
        if code or "GLOBAL" in str(err):
            named = ", ".join(code[:3]) if code else _unsafe_reason(err)
            raise UnsafeFileError(
                f"{what} {path} holds Python objects whose loading could run code "
                f"({named}); refused: sfd loads only tensors (weights_only=True). "
                f"Re-save it as tensors (safetensors) from a trusted environment"
            ) from None
        raise BadInputError(
            f"{what} {path} is not a readable torch file (truncated or another format): "
            f"{_unsafe_reason(err)}"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, AttributeError) as err:
        raise BadInputError(
            f"{what} {path} is not a readable torch file (truncated or another format): "
            f"{first_line(err)}"
        ) from None


_SAFE_GLOBALS = ("torch.", "collections.OrderedDict", "builtins.set", "numpy.")


def _code_globals(path: Path) -> list[str]:
    """The callables a pickle file would import (``GLOBAL`` / ``STACK_GLOBAL``), other than
    torch's own rebuild functions: what loading it with plain ``pickle`` would run."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                names = [n for n in z.namelist() if n.endswith("data.pkl")]
                data = z.read(names[0]) if names else b""
        else:
            with open(path, "rb") as f:
                data = f.read(1 << 26)
    except (OSError, zipfile.BadZipFile):
        return []
    found: list[str] = []
    strings: list[str] = []
    try:
        for op, arg, _ in pickletools.genops(data):
            if op.name in ("GLOBAL", "INST"):
                found.append(str(arg).replace(" ", "."))
            elif "UNICODE" in op.name or op.name.endswith("STRING"):
                strings.append(str(arg))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.append(f"{strings[-2]}.{strings[-1]}")
    except Exception:  # a malformed pickle: what was read so far counts
        pass
    return [g for g in dict.fromkeys(found) if not g.startswith(_SAFE_GLOBALS)]


def _unsafe_reason(err: BaseException) -> str:
    for line in str(err).splitlines():
        line = line.strip()
        if "GLOBAL" in line or "Unsupported" in line:
            return line.rstrip(".")
    return first_line(err).rstrip(".")


def load_safetensors(path: str | Path, what: str = "weights file") -> dict:
    """``safetensors.torch.load_file`` of ``path`` with the file named on failure."""
    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"{what} {path} does not exist")
    try:
        return load_file(str(path))
    except Exception as err:  # SafetensorError, OSError, ...: all mean an unreadable file
        raise BadInputError(
            f"{what} {path} is not a readable safetensors file (truncated or corrupt): "
            f"{first_line(err)}"
        ) from None


def safetensors_metadata(path: str | Path, what: str = "weights file") -> dict[str, str]:
    """The metadata of a safetensors file (empty if none), the file named on failure."""
    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"{what} {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as err:
        raise BadInputError(
            f"{what} {path} is not a readable safetensors file (truncated or corrupt): "
            f"{first_line(err)}"
        ) from None


def load_tensor_file(path: str | Path, what: str = "weights file") -> Any:
    """A ``.safetensors`` file, else a torch file read with ``weights_only=True``."""
    if Path(path).suffix == ".safetensors":
        return load_safetensors(path, what)
    return load_torch_file(path, what)


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
