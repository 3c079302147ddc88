"""Shards: written atomically with a hashed sidecar, read back zero-copy; a damaged shard is
not taken for a finished one."""

import json

import numpy as np
import pytest
import torch

from sfd.data.shards import (
    MappedShard,
    atomic_save_safetensors,
    atomic_write_json,
    finished_shard,
    rows,
    write_shard,
)
from sfd.errors import BadInputError


def test_a_written_shard_reads_back_exactly(tmp_path):
    tensors = {"x": torch.randn(5, 3), "label": torch.arange(5)}
    info = write_shard(tmp_path, 0, tensors)
    assert info["count"] == 5 and finished_shard(tmp_path, 0) == info
    shard = MappedShard(tmp_path / info["file"])
    assert len(shard) == 5 and "x" in shard and "y" not in shard
    assert torch.equal(rows(shard["x"], np.array([4, 0])), tensors["x"][[4, 0]])
    assert torch.equal(torch.from_numpy(np.array(shard["label"])), tensors["label"])


def test_a_damaged_or_missing_shard_is_not_finished(tmp_path):
    info = write_shard(tmp_path, 1, {"x": torch.zeros(4, 2)})
    assert finished_shard(tmp_path, 0) is None
    path = tmp_path / info["file"]
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # same size, other contents: only the hash tells
    path.write_bytes(bytes(data))
    assert finished_shard(tmp_path, 1, verify=False) is not None
    assert finished_shard(tmp_path, 1) is None
    path.write_bytes(bytes(data[:20]))
    with pytest.raises(BadInputError, match="truncated"):
        MappedShard(path)


def test_rows_must_agree_and_json_is_written_whole(tmp_path):
    with pytest.raises(ValueError, match="same number of rows"):
        write_shard(tmp_path, 0, {"a": torch.zeros(2), "b": torch.zeros(3)})
    atomic_write_json(tmp_path / "meta.json", {"count": 3})
    assert json.loads((tmp_path / "meta.json").read_text()) == {"count": 3}
    assert not list(tmp_path.glob("*.tmp*"))


def test_the_same_tensors_and_metadata_save_to_the_same_bytes(tmp_path):
    """safetensors writes its metadata map in a random order per save
    (huggingface/safetensors#584); our saves sort it, so checkpoints of equal runs are equal files,
    and still read back whole."""
    import struct

    from safetensors import safe_open
    from safetensors.torch import load_file

    tensors = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.ones(4, dtype=torch.float16)}
    meta = {f"key{i}": json.dumps({"i": i, "text": 'Δt "quoted"\n'}) for i in range(16)}
    digests = set()
    for k in range(6):
        order = sorted(meta) if k % 2 else sorted(meta, reverse=True)
        path = tmp_path / f"s{k}.safetensors"
        atomic_save_safetensors(path, tensors, {name: meta[name] for name in order})
        data = path.read_bytes()
        digests.add(data)
        (n,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8 : 8 + n])
        assert list(header["__metadata__"]) == sorted(meta)
        with safe_open(str(path), "pt") as f:
            assert f.metadata() == meta
        got = load_file(str(path))
        assert all(torch.equal(got[name], t) for name, t in tensors.items())
    assert len(digests) == 1
