"""Integrity on read: a flipped byte in a latent or feature shard, or in any file of a
checkpoint, is refused by name (file, found and expected sha256, what to do) before any step;
``sfd verify`` says what is intact; ``--no-verify`` is recorded in the run."""

import hashlib
import json
import os

import pytest
from click.testing import CliRunner

from sfd.cli import main
from sfd.errors import EXIT_BAD_INPUT
from sfd.training.checkpoint import list_checkpoints
from sfd.training.integrity import RECORD
from tests.badinput.conftest import SAMPLE, TRAIN, accepted, refused
from tests.helpers import write_feature_set


def flip(path, offset=-5):
    """Invert one byte of tensor data (same size: only the digest tells)."""
    data = bytearray(path.read_bytes())
    old = hashlib.sha256(data).hexdigest()
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    return old, hashlib.sha256(data).hexdigest()


def test_a_flipped_byte_in_a_latent_shard_is_refused_before_any_step(latents, copy_of, tmp_path):
    data = copy_of(latents, "data")
    expected, found = flip(data / "shard-00001.safetensors")
    run = tmp_path / "run"
    refused(
        [*TRAIN, "--data", data, "--out", run],
        EXIT_BAD_INPUT,
        "shard-00001.safetensors is corrupt",
        f"sha256 {found} found",
        f"{expected} expected",
        "sfd extract",
        inputs=[data],
    )
    assert not list_checkpoints(run) and not (run / "log.jsonl").exists(), "it trained"
    assert not (run / RECORD).exists()
    refused(["verify", data], EXIT_BAD_INPUT, "1 of 1 damaged", inputs=[data])
    out = CliRunner().invoke(main, ["verify", str(data)]).stdout
    assert out.startswith("DAMAGED  sfd-latents") and "shard-00001.safetensors is corrupt" in out
    # --no-verify trains on it, and says so in the run
    accepted([*TRAIN, "--data", data, "--out", run, "--no-verify"])
    (check,) = json.loads((run / RECORD).read_text())["checks"]
    assert check["verified"] is False and check["skipped"] == "--no-verify"


def test_a_run_checks_its_data_once_and_again_after_a_shard_changed(latents, copy_of, tmp_path):
    data, run = copy_of(latents, "data"), tmp_path / "run"
    args = [*TRAIN, "--data", data, "--out", run]
    accepted(args)
    accepted([*args, "--set", "train.total_steps=2"])  # resumed: the set is unchanged
    checks = json.loads((run / RECORD).read_text())["checks"]
    assert [c["verified"] for c in checks] == [True] and checks[0]["files"] == 2
    shard = data / "shard-00000.safetensors"
    os.utime(shard, ns=(shard.stat().st_atime_ns, shard.stat().st_mtime_ns + 10**9))
    accepted([*args, "--set", "train.total_steps=3"])  # a shard was touched: checked again
    assert len(json.loads((run / RECORD).read_text())["checks"]) == 2
    flip(shard)
    os.utime(shard, ns=(shard.stat().st_atime_ns, shard.stat().st_mtime_ns + 10**9))
    refused([*args, "--set", "train.total_steps=4"], EXIT_BAD_INPUT, "shard-00000")


def test_a_flipped_byte_in_a_feature_shard_is_refused(tmp_path):
    features = tmp_path / "features"
    write_feature_set(features, count=32, shard_size=16)
    _, found = flip(features / "shard-00001.safetensors")
    out = tmp_path / "semvae"
    refused(
        [
            "train-semvae",
            "--features",
            features,
            "--out",
            out,
            "--total-steps",
            2,
            "--batch-size",
            8,
            "--width",
            16,
            "--depth",
            1,
            "--num-heads",
            2,
        ],
        EXIT_BAD_INPUT,
        "shard-00001.safetensors is corrupt",
        found,
        "sfd extract-features",
        inputs=[features],
    )
    assert not (out / "semvae.safetensors").exists()


@pytest.mark.parametrize("name", ["ema", "model", "optimizer"])
def test_a_flipped_byte_in_a_checkpoint_is_refused_on_resume(trained, latents, copy_of, name):
    run = copy_of(trained)
    ckpt = list_checkpoints(run)[-1]
    expected, found = flip(ckpt / f"{name}.safetensors")
    log_before = (run / "log.jsonl").read_bytes()
    refused(
        [*TRAIN, "--set", "train.total_steps=4", "--data", latents, "--out", run],
        EXIT_BAD_INPUT,
        f"{name}.safetensors is corrupt",
        found,
        expected,
        "restore step-0000002 from a copy",
        inputs=[ckpt],
    )
    assert (run / "log.jsonl").read_bytes() == log_before, "a step ran"
    assert [p.name for p in list_checkpoints(run)] == ["step-0000002"]


def test_a_flipped_byte_in_ema_weights_is_refused_by_sample_and_export(trained, copy_of, tmp_path):
    run = copy_of(trained)
    ckpt = list_checkpoints(run)[-1]
    _, found = flip(ckpt / "ema.safetensors")
    refused(
        ["sample", run, "--out", tmp_path / "s", *SAMPLE],
        EXIT_BAD_INPUT,
        "ema.safetensors is corrupt",
        found,
        inputs=[run],
    )
    assert not (tmp_path / "s" / "latents.safetensors").exists()
    refused(
        ["export-diffusers", run, tmp_path / "x"],
        EXIT_BAD_INPUT,
        "ema.safetensors is corrupt",
        inputs=[run],
    )


def test_verify_reports_intact_sets_checkpoints_and_runs(trained, latents, tmp_path):
    for path in (latents, trained, list_checkpoints(trained)[-1]):
        out = accepted(["verify", path]).output
        assert out.startswith("intact") and "DAMAGED" not in out, out
    features = tmp_path / "f"
    write_feature_set(features, count=16, shard_size=8)
    assert accepted(["verify", features]).output.startswith("intact   sfd-features")
    refused(["verify", tmp_path / "nothing"], EXIT_BAD_INPUT, "does not exist")
    (tmp_path / "empty").mkdir()
    refused(["verify", tmp_path / "empty"], EXIT_BAD_INPUT, "neither a shard set")


def test_a_truncated_checkpoint_file_is_named_with_both_sizes(trained, copy_of):
    run = copy_of(trained)
    ema = list_checkpoints(run)[-1] / "ema.safetensors"
    size = ema.stat().st_size
    ema.write_bytes(ema.read_bytes()[:1000])
    refused(["verify", run], EXIT_BAD_INPUT, "1 of 1 damaged")
    out = refused(["sample", run, "--out", run / "s", *SAMPLE], EXIT_BAD_INPUT, "ema.safetensors")
    assert f"1000 bytes, {size} were recorded" in out
