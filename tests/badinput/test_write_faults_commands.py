"""A write that fails (out of space, read-only, permission denied, I/O error) in each long
command's writer: one line naming the write and why (exit 7), no temporary file left, the
last good state intact, and a rerun that resumes to what an uninterrupted run writes. The
failures are injected (``OSError`` as the OS raises it, or safetensors' own error type that
wraps it); one real out-of-space case mounts a small tmpfs where this is allowed (root)."""

import errno
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import SafetensorError

from sfd.config import TextureVAETrainConfig
from sfd.data import images, tensor_files
from sfd.errors import EXIT_WRITE
from sfd.training.checkpoint import list_checkpoints
from sfd.training.texture_vae import build_texture_vae
from tests.badinput.conftest import TRAIN, accepted, refused
from tests.helpers import write_feature_set

CODES = [errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EIO]


def fault(code: int, safetensors: bool = False) -> Exception:
    if safetensors:  # what safetensors raises when the disk fills during save_file
        return SafetensorError(
            f"Error while serializing: I/O error: {os.strerror(code)} (os error {code})"
        )
    return OSError(code, os.strerror(code))


def failing(real, code: int, after: int = 0, safetensors: bool = False, path_arg: int = 1):
    """``real`` that works ``after`` times, then writes half a file and fails with ``code``."""
    calls = [0]

    def call(*args, **kwargs):
        calls[0] += 1
        if calls[0] <= after:
            return real(*args, **kwargs)
        Path(args[path_arg]).write_bytes(b"\0" * 100)  # the disk filled midway
        raise fault(code, safetensors)

    return call


def leftovers(root: Path) -> list[str]:
    return [str(p) for p in Path(root).rglob("*") if ".tmp" in p.name]


@pytest.mark.parametrize("code", CODES)
def test_checkpoint_write_faults_are_named(latents, tmp_path, monkeypatch, code):
    run = tmp_path / "run"
    args = [*TRAIN, "--set", "train.ckpt_every=1", "--data", latents, "--out", run]
    fail = failing(tensor_files.save_file, code, after=3, safetensors=code == errno.ENOSPC)
    monkeypatch.setattr(tensor_files, "save_file", fail)
    refused(
        [*args, "--set", "train.total_steps=2"],
        EXIT_WRITE,
        "step-0000002 failed",
        os.strerror(code),
        "step-0000001 is intact",
        "a rerun resumes",
    )
    assert [p.name for p in list_checkpoints(run)] == ["step-0000001"] and not leftovers(run)


def test_a_log_write_fault_is_named(latents, tmp_path, monkeypatch):
    from sfd.training import logs

    def fail(*a, **k):
        raise OSError(errno.EIO, os.strerror(errno.EIO), str(a[0]))

    monkeypatch.setattr(logs, "open", fail, raising=False)
    refused(
        [*TRAIN, "--data", latents, "--out", tmp_path / "run"],
        EXIT_WRITE,
        "log.jsonl failed: Input/output error",
        "a rerun resumes",
    )


@pytest.fixture(scope="module")
def decoder(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("decoder") / "decoder"
    torch.manual_seed(0)
    cfg = TextureVAETrainConfig(block_out_channels=(8,), latent_channels=4, norm_num_groups=4)
    build_texture_vae(3, cfg).save_pretrained(path)
    return path


def test_sample_png_and_npz_write_faults_then_a_rerun_resumes(
    trained, decoder, tmp_path, monkeypatch
):
    args = [
        "sample",
        trained,
        "--num",
        6,
        "--batch-size",
        2,
        "--decoder",
        decoder,
        "--device",
        "cpu",
        "--set",
        "sample.method=euler",
        "--set",
        "sample.num_steps=2",
    ]
    accepted([*args, "--out", tmp_path / "straight"])
    out = tmp_path / "out"
    save = failing(Image.Image.save, errno.ENOSPC, after=3)
    monkeypatch.setattr(Image.Image, "save", lambda im, fp, **kw: save(im, fp, **kw))
    refused(
        [*args, "--out", out],
        EXIT_WRITE,
        "000003.png failed: No space left on device",
        "no partial file was left",
    )
    assert sorted(p.name for p in (out / "images").iterdir()) == [f"{i:06d}.png" for i in range(3)]
    monkeypatch.undo()
    monkeypatch.setattr(images, "_write_npz", failing(images._write_npz, errno.EIO, path_arg=0))
    refused([*args, "--out", out], EXIT_WRITE, "samples.npz failed: Input/output error")
    assert not (out / "samples.npz").exists() and not leftovers(out)
    monkeypatch.undo()
    accepted([*args, "--out", out])
    for rel in [f"images/{i:06d}.png" for i in range(6)] + ["samples.npz"]:
        assert (out / rel).read_bytes() == (tmp_path / "straight" / rel).read_bytes(), rel


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("images") / "images"
    rng = np.random.default_rng(0)
    for c in "ab":
        (root / c).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(
                root / c / f"{i}.png"
            )
    return root


def test_extract_shard_write_fault_then_a_rerun_resumes(folder, tmp_path, monkeypatch):
    args = [
        "extract-features",
        "--dataset",
        "folder",
        "--data-root",
        folder,
        "--image-size",
        32,
        "--encoder-stride",
        8,
        "--grid",
        8,
        "--shard-size",
        3,
        "--batch-size",
        3,
        "--device",
        "cpu",
    ]
    accepted([*args, "--out", tmp_path / "straight"])
    out = tmp_path / "out"
    fail = failing(tensor_files.save_file, errno.ENOSPC, after=1, safetensors=True)
    monkeypatch.setattr(tensor_files, "save_file", fail)
    refused([*args, "--out", out], EXIT_WRITE, "shard-00001.safetensors failed: No space left")
    assert (out / "shard-00000.json").exists() and not (out / "shard-00001.json").exists()
    assert not leftovers(out) and not (out / "meta.json").exists()
    monkeypatch.undo()
    accepted([*args, "--out", out])
    for k in range(3):
        name = f"shard-{k:05d}.safetensors"
        assert (out / name).read_bytes() == (tmp_path / "straight" / name).read_bytes()


def test_semvae_state_write_fault_then_a_rerun_resumes(tmp_path, monkeypatch):
    features = tmp_path / "features"
    write_feature_set(features, count=32, shard_size=16)
    args = [
        "train-semvae",
        "--features",
        features,
        "--total-steps",
        6,
        "--ckpt-every",
        2,
        "--batch-size",
        8,
        "--width",
        16,
        "--depth",
        1,
        "--num-heads",
        2,
        "--warmup-steps",
        1,
    ]
    accepted([*args, "--out", tmp_path / "straight"])
    out = tmp_path / "out"
    monkeypatch.setattr(
        tensor_files, "save_file", failing(tensor_files.save_file, errno.EROFS, after=2)
    )
    refused(
        [*args, "--out", out],
        EXIT_WRITE,
        ".train_state failed: Read-only file system",
        "the last saved state is intact",
    )
    assert not leftovers(out) and (out / ".train_state" / "state.json").exists()
    monkeypatch.undo()
    accepted([*args, "--out", out])
    name = "semvae.safetensors"
    assert (out / name).read_bytes() == (tmp_path / "straight" / name).read_bytes()


def test_texture_vae_final_save_fault(folder, tmp_path, monkeypatch):
    from diffusers import ModelMixin

    args = [
        "train-texture-vae",
        "--dataset",
        "folder",
        "--data-root",
        folder,
        "--image-size",
        16,
        "--channels",
        3,
        "--out",
        tmp_path / "vae",
        "--block-out-channels",
        "8",
        "--latent-channels",
        4,
        "--norm-num-groups",
        4,
        "--batch-size",
        4,
        "--total-steps",
        2,
        "--warmup-steps",
        1,
    ]
    real = ModelMixin.save_pretrained

    def save(self, directory, **kw):
        real(self, directory, **kw)
        raise fault(errno.ENOSPC, safetensors=True)

    monkeypatch.setattr(ModelMixin, "save_pretrained", save)
    refused(args, EXIT_WRITE, "vae failed: No space left on device", "a rerun writes them")
    assert not leftovers(tmp_path / "vae")
    assert not (tmp_path / "vae" / "diffusion_pytorch_model.safetensors").exists()
    monkeypatch.undo()
    accepted(args)
    assert (tmp_path / "vae" / "diffusion_pytorch_model.safetensors").exists()


def test_export_write_fault_leaves_no_partial_export(trained, decoder, tmp_path, monkeypatch):
    from diffusers import DiffusionPipeline

    def save(self, directory, **kw):
        (Path(directory) / "half").write_bytes(b"\0")
        raise fault(errno.ENOSPC, safetensors=True)

    monkeypatch.setattr(DiffusionPipeline, "save_pretrained", save)
    out = tmp_path / "export"
    refused(
        ["export-diffusers", trained, out, "--decoder", decoder],
        EXIT_WRITE,
        "export failed: No space left on device",
        "no partial export",
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_full_tmpfs_keeps_the_last_checkpoint_and_a_rerun_resumes(latents, tmp_path):
    """The real thing: checkpoints into a 4 MB tmpfs (one tiny checkpoint is 3.2 MB)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip("mounting a tmpfs needs root (the injected faults above cover the rest)")
    try:
        run = mnt / "run"
        args = [
            *TRAIN,
            "--set",
            "train.ckpt_every=1",
            "--set",
            "train.keep_last=1",
            "--data",
            latents,
            "--out",
            run,
        ]
        refused(
            [*args, "--set", "train.total_steps=2"],
            EXIT_WRITE,
            "step-0000002 failed",
            "No space left on device",
            "step-0000001 is intact",
        )
        assert [p.name for p in list_checkpoints(run)] == ["step-0000001"] and not leftovers(run)
        subprocess.run(["mount", "-o", "remount,size=16m", str(mnt)], check=True)
        accepted([*args, "--set", "train.total_steps=2"])
        assert [p.name for p in list_checkpoints(run)] == ["step-0000002"]
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_a_failed_safetensors_write_is_not_called_an_unreadable_file():
    from sfd.errors import EXIT_BAD_INPUT, classify

    code, line = classify(fault(errno.ENOSPC, safetensors=True))
    assert (code, line) == (
        EXIT_WRITE,
        "writing a safetensors file failed: No space left on device",
    )
    code, _ = classify(SafetensorError("Error while deserializing header: invalid header length"))
    assert code == EXIT_BAD_INPUT
