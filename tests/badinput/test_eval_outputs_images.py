"""Eval inputs, output directories and image files."""

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sfd.data.images import load_image
from sfd.errors import EXIT_BAD_INPUT, EXIT_MISMATCH, EXIT_USAGE, EXIT_WRITE
from tests.badinput.conftest import SAMPLE, TRAIN, accepted, refused, snapshot

# ---------------------------------------------------------------------------------------------
# eval inputs (the network is the cheap stand-in of tests/eval; the checks come before it runs)


@pytest.fixture
def eval_dir(tmp_path, monkeypatch):
    from sfd.cli import eval as cli
    from tests.eval.helpers import TinyNet, random_images

    monkeypatch.setattr(cli, "load_inception", lambda path, device: TinyNet())
    np.savez(tmp_path / "ref.npz", random_images(10, seed=2))
    (tmp_path / "w.pth").write_bytes(b"")
    return tmp_path


@pytest.mark.parametrize(
    "array, code, needle, metrics",
    [
        (np.zeros((4, 8, 8, 3), np.float32), EXIT_USAGE, "expected uint8", "fid"),
        (np.zeros((8, 8, 3), np.uint8), EXIT_USAGE, "expected uint8 images of shape", "fid"),
        (np.zeros((4, 8, 8, 4), np.uint8), EXIT_USAGE, "(N, H, W, 3)", "fid"),
        (np.zeros((4, 8, 8, 2), np.uint8), EXIT_USAGE, "(N, H, W, 3)", "fid"),
        (np.zeros((3, 8, 8, 3), np.uint8), EXIT_BAD_INPUT, "at least k + 1 = 4", "precision"),
        (np.zeros((1, 8, 8, 3), np.uint8), EXIT_BAD_INPUT, "at least 2", "inception_score"),
    ],
)
def test_eval_inputs(eval_dir, array, code, needle, metrics):
    np.savez(eval_dir / "s.npz", array)
    args = ["eval", eval_dir / "s.npz", "--ref", eval_dir / "ref.npz", "--inception-weights"]
    refused(
        [*args, eval_dir / "w.pth", "--metrics", metrics, "--no-progress"],
        code,
        needle,
        inputs=[eval_dir],
    )


def test_eval_reference_too_small_for_recall(eval_dir):
    from tests.eval.helpers import random_images

    np.savez(eval_dir / "s.npz", random_images(6))
    np.savez(eval_dir / "small.npz", random_images(2))
    args = ["eval", eval_dir / "s.npz", "--ref", eval_dir / "small.npz", "--inception-weights"]
    refused([*args, eval_dir / "w.pth", "--metrics", "recall"], EXIT_BAD_INPUT, "small.npz")


# ---------------------------------------------------------------------------------------------
# output directories


def test_output_under_a_file(trained, latents, tmp_path):
    (tmp_path / "file").write_text("mine")
    refused(
        ["sample", trained, "--out", tmp_path / "file" / "s", *SAMPLE],
        EXIT_BAD_INPUT,
        str(tmp_path / "file"),
        inputs=[tmp_path / "file"],
    )
    refused(
        [*TRAIN, "--data", latents, "--out", tmp_path / "file" / "r"],
        EXIT_BAD_INPUT,
        str(tmp_path / "file"),
        inputs=[tmp_path / "file"],
    )


def test_output_not_writable(latents, tmp_path, monkeypatch):
    """A directory the user may not write to. Root writes through permission bits, so the
    refusal the OS would give is injected where sfd creates the run directory."""
    ro = tmp_path / "ro"
    ro.mkdir()
    real_mkdir = Path.mkdir

    def mkdir(self, *args, **kwargs):
        if self == ro or ro in self.parents:
            raise PermissionError(13, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    refused([*TRAIN, "--data", latents, "--out", ro / "r"], EXIT_WRITE, str(ro))


def test_output_holding_another_run(trained, latents, copy_of, tmp_path):
    run = copy_of(trained, "run")
    args = [*TRAIN, "--set", "train.lr=0.5", "--data", latents, "--out", run]
    refused(args, EXIT_MISMATCH, "holds a run with another config", "train.lr", inputs=[run])


def test_sample_dir_with_other_settings(trained, tmp_path, monkeypatch):
    out = tmp_path / "s"
    out.mkdir()
    (out / "generation.json").write_text(json.dumps({"run": "elsewhere", "num": 9}))
    args = ["sample", trained, "--out", out, "--num", 2, "--device", "cpu", "--decoder", trained]
    refused(args, EXIT_MISMATCH, "other settings", inputs=[out])


# ---------------------------------------------------------------------------------------------
# image files (sfd extract-features over an image folder; --on-error raise)


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels (a decompression bomb's header)."""

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b""))
        + (chunk(b"IEND", b""))
    )


def _png(mode, size=(20, 20), **kw):
    buf = io.BytesIO()
    arr = np.random.default_rng(0).integers(0, 255, (*size[::-1], 3), dtype=np.uint8)
    Image.fromarray(arr).convert(mode).save(buf, format=kw.pop("format", "PNG"), **kw)
    return buf.getvalue()


BAD_IMAGES = {
    "truncated": lambda: _png("RGB")[:60],
    "zero-byte": lambda: b"",
    "not an image": lambda: b"hello, I am a text file\n",
    "absurdly large": lambda: _png_claiming(100_000, 100_000),
    "absurdly large, under PIL's bomb limit": lambda: _png_claiming(10_000, 9_000),
}


def _extract(root, out):
    return [
        "extract-features",
        "--dataset",
        "folder",
        "--data-root",
        root,
        "--image-size",
        16,
        "--channels",
        3,
        "--out",
        out,
        "--device",
        "cpu",
        "--encoder-stride",
        8,
        "--on-error",
        "raise",
        "--batch-size",
        8,
    ]


@pytest.mark.parametrize("case", sorted(BAD_IMAGES))
def test_bad_image(tmp_path, case):
    root = tmp_path / "imgs"
    (root / "a").mkdir(parents=True)
    (root / "a" / "good.png").write_bytes(_png("RGB"))
    bad = root / "a" / "zz_bad.png"
    bad.write_bytes(BAD_IMAGES[case]())
    refused(_extract(root, tmp_path / "out"), EXIT_BAD_INPUT, str(bad), inputs=[root])


def test_unusual_modes_are_converted(tmp_path):
    """CMYK, RGBA, 16-bit, palette and grayscale files are decoded to RGB, not refused."""
    root = tmp_path / "imgs"
    (root / "a").mkdir(parents=True)
    files = {
        "cmyk.jpg": _png("CMYK", format="JPEG"),
        "rgba.png": _png("RGBA"),
        "palette.png": _png("P"),
        "gray.png": _png("L"),
    }
    for name, data in files.items():
        (root / "a" / name).write_bytes(data)
    deep = np.full((20, 20), 40000, np.uint16)
    Image.fromarray(deep).save(root / "a" / "deep16.png")
    assert Image.open(root / "a" / "deep16.png").mode.startswith("I;16")
    assert np.asarray(load_image(root / "a" / "deep16.png", "RGB")).min() == round(40000 / 257)
    before = snapshot(root)
    result = accepted(_extract(root, tmp_path / "out"))
    assert "5 images" in result.output and snapshot(root) == before
