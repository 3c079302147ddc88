"""Tensor files: atomic saves whose bytes depend only on the tensors and the metadata."""

import json

import torch

from sfd.data.tensor_files import atomic_save_safetensors


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
