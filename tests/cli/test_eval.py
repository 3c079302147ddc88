"""``sfd eval`` / ``sfd ref-stats`` click commands: results, JSON, and clear input errors."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from sfd.cli import eval as cli
from tests.eval.helpers import TinyNet, random_images


@pytest.fixture
def files(tmp_path, monkeypatch):
    """Sample/reference npz files and a weights path; the network is the cheap stand-in."""
    monkeypatch.setattr(cli, "load_inception", lambda path, device: TinyNet())
    np.savez(tmp_path / "samples.npz", random_images(12, seed=1), np.arange(12))
    np.savez(tmp_path / "ref.npz", random_images(10, seed=2))
    (tmp_path / "weights.pth").write_bytes(b"")
    return tmp_path


def run(*args):
    return CliRunner().invoke(args[0], [str(a) for a in args[1:]], catch_exceptions=False)


def test_ref_stats_then_eval_writes_json(files):
    stats = files / "ref.safetensors"
    w = ("--inception-weights", files / "weights.pth", "--device", "cpu", "--no-progress")
    result = run(cli.ref_stats_command, files / "ref.npz", "--out", stats, *w)
    assert result.exit_code == 0, result.output
    assert "10 images" in result.output
    out = files / "metrics.json"
    result = run(cli.eval_command, files / "samples.npz", "--ref", stats, "--out", out, *w)
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())
    assert set(metrics) == {
        "num_samples",
        "num_reference",
        "fid",
        "sfid",
        "inception_score",
        "precision",
        "recall",
    }
    assert "Inception Score" in result.output and metrics["num_samples"] == 12


def test_eval_metric_subset(files):
    result = run(
        cli.eval_command,
        files / "samples.npz",
        "--ref",
        files / "ref.npz",
        "--inception-weights",
        files / "weights.pth",
        "--metrics",
        "fid,recall",
        "--no-progress",
    )
    assert result.exit_code == 0, result.output
    assert "FID" in result.output and "Precision" not in result.output


@pytest.mark.parametrize(
    "make, args, message",
    [
        (lambda d: np.savez(d / "s.npz", np.zeros((2, 8, 8, 3), np.float32)), ["s.npz"], "uint8"),
        (lambda d: np.savez(d / "s.npz", x=np.zeros(2)), ["s.npz"], "no 'arr_0'"),
        (lambda d: None, ["samples.npz", "--metrics", "kid"], "unknown"),
        (lambda d: None, ["missing.npz"], "does not exist"),
    ],
)
def test_eval_input_errors(files, make, args, message):
    make(files)
    argv = [files / args[0], *args[1:], "--ref", files / "ref.npz"]
    result = run(cli.eval_command, *argv, "--inception-weights", files / "weights.pth")
    assert result.exit_code == 2 and message in result.output


def test_wrong_weights_file_is_a_parameter_error(tmp_path):
    np.savez(tmp_path / "ref.npz", random_images(4))
    torch.save({"fc.weight": torch.zeros(1000, 2048)}, tmp_path / "weights.pth")
    result = run(
        cli.eval_command,
        tmp_path / "ref.npz",
        "--ref",
        tmp_path / "ref.npz",
        "--inception-weights",
        tmp_path / "weights.pth",
    )
    assert result.exit_code == 2
    assert "--inception-weights" in result.output and "missing" in result.output


def test_eval_against_a_folder_of_photos_of_mixed_sizes(tmp_path):
    """The user's own folder as the reference: mixed sizes read at the samples' size (the
    pipeline's crop), an unreadable file skipped, and the distance printed with its spread
    and the images it rests on."""
    from PIL import Image

    from sfd.cli import main

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "samples.npz", arr_0=rng.integers(0, 256, (6, 16, 16, 3), np.uint8))
    photos = tmp_path / "photos"
    for i, (w, h) in enumerate([(20, 30), (64, 40), (17, 17), (90, 120), (33, 21)]):
        (photos / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), np.uint8)).save(
            photos / f"c{i % 2}/{i}.png"
        )
    (photos / "c0" / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "r.json"
    args = [
        "eval",
        str(tmp_path / "samples.npz"),
        "--ref",
        str(photos),
        "--feature-space",
        "efficientnet-lite0",
        "--feature-size",
        "32",
        "--on-error",
        "skip",
        "--no-progress",
        "--device",
        "cpu",
        "--out",
        str(out),
    ]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "± " in res.output and "6 samples vs 5 reference images" in res.output
    result = json.loads(out.read_text())
    assert result["images"] == [6, 5] and result["spread"] > 0
    assert np.isfinite(result["fd_efficientnet_lite0"])
