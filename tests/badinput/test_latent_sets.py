"""Latent shard sets given to ``sfd train --data``: every defect is one line, exit 3 (or 5)."""

import json

import pytest
from safetensors.torch import load_file, save_file

from sfd.data.tensor_files import sha256_file
from sfd.errors import EXIT_BAD_INPUT, EXIT_MISMATCH
from tests.badinput.conftest import TRAIN, refused


def _rewrite(data, mutate):
    """Apply ``mutate`` to shard 0's tensors and rewrite it with a consistent meta.json."""
    path = data / "shard-00000.safetensors"
    tensors = load_file(str(path))
    mutate(tensors)
    save_file(tensors, str(path))
    meta = json.loads((data / "meta.json").read_text())
    meta["shards"][0].update(bytes=path.stat().st_size, sha256=sha256_file(path))
    (data / "meta.json").write_text(json.dumps(meta))


def _edit_meta(data, fn):
    meta = json.loads((data / "meta.json").read_text())
    fn(meta)
    (data / "meta.json").write_text(json.dumps(meta))


CASES = {
    "missing key": (lambda d: _rewrite(d, lambda t: t.pop("sem_std")), "lacks the tensors"),
    "wrong shape": (
        lambda d: _rewrite(d, lambda t: t.update(tex_mean=t["tex_mean"][:, :, :2].clone())),
        "'tex_mean' is float32",
    ),
    "wrong dtype": (
        lambda d: _rewrite(d, lambda t: t.update(tex_std=t["tex_std"].double())),
        "'tex_std' is float64",
    ),
    "label out of range": (
        lambda d: _rewrite(d, lambda t: t.update(label=t["label"] + 100)),
        "outside [0, num_classes=10)",
    ),
    "truncated file": (
        lambda d: (d / "shard-00001.safetensors").write_bytes(
            (d / "shard-00001.safetensors").read_bytes()[:300]
        ),
        "missing or has the wrong size",
    ),
    "truncated, meta agrees": (
        lambda d: (
            (d / "shard-00001.safetensors").write_bytes(
                (d / "shard-00001.safetensors").read_bytes()[:300]
            ),
            _edit_meta(d, lambda m: m["shards"][1].update(bytes=300)),
        ),
        "truncated",
    ),
    "path traversal": (
        lambda d: _edit_meta(d, lambda m: m["shards"][0].update(file="../secret.safetensors")),
        "not a file inside",
    ),
    "absolute path": (
        lambda d: _edit_meta(d, lambda m: m["shards"][0].update(file="/etc/passwd")),
        "not a file inside",
    ),
    "meta not json": (lambda d: (d / "meta.json").write_text("{oops"), "not valid JSON"),
    "meta wrong format": (lambda d: _edit_meta(d, lambda m: m.update(format="x")), "format"),
    "meta bad count": (lambda d: _edit_meta(d, lambda m: m.update(count=99)), "count 99"),
    "meta bad stats": (
        lambda d: _edit_meta(d, lambda m: m["stats"].update(std=[0.0] * 6)),
        "positive 'std'",
    ),
    "meta field type": (lambda d: _edit_meta(d, lambda m: m.update(size="8")), "'size'"),
    "no shards": (lambda d: _edit_meta(d, lambda m: m.update(shards=[])), "non-empty list"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_latent_set(latents, copy_of, tmp_path, case):
    data = copy_of(latents, "data")
    (tmp_path / "secret.safetensors").write_bytes((data / "shard-00000.safetensors").read_bytes())
    corrupt, needle = CASES[case]
    corrupt(data)
    refused(
        [*TRAIN, "--data", data, "--out", tmp_path / "run"], EXIT_BAD_INPUT, needle, inputs=[data]
    )
    assert not list((tmp_path / "run").glob("checkpoints/*"))


def test_data_that_does_not_fit_the_config(latents, tmp_path):
    refused(
        [*TRAIN, "--set", "latent.tex_channels=3", "--data", latents, "--out", tmp_path / "run"],
        EXIT_MISMATCH,
        "latent.tex_channels = 4",
        inputs=[latents],
    )
    refused(
        [*TRAIN, "--set", "model.num_classes=7", "--data", latents, "--out", tmp_path / "run2"],
        EXIT_MISMATCH,
        "model.num_classes = 10",
        inputs=[latents],
    )


def test_good_set_trains(latents, tmp_path):
    from tests.badinput.conftest import accepted

    accepted([*TRAIN, "--data", latents, "--out", tmp_path / "run"])
