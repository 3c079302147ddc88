"""Shards: written atomically with a hashed sidecar, read back zero-copy; a damaged shard is
not taken for a finished one."""

import json

import numpy as np
import pytest
import torch

from sfd.data.shards import finished_shard, write_shard
from sfd.data.tensor_files import MappedShard, atomic_write_json, rows
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
