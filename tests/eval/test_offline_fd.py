"""Offline Fréchet distances (`sfd eval --feature-space ...`): EfficientNet-Lite0 with its real
ImageNet weights and FD_DINOv2 with a randomly initialised small DINOv2 saved to disk."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from sfd.cli import main
from sfd.eval.evaluate import frechet_distance_with
from sfd.eval.metrics import frechet_distance
from sfd.eval.offline import offline_feature_fn
from sfd.eval.stats import FeatureStats


def _images(seed: int, n: int = 12, size: int = 32) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)


@pytest.fixture()
def npzs(tmp_path):
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    np.savez(a, arr_0=_images(0))
    np.savez(b, arr_0=np.clip(_images(1).astype(int) // 2 + 100, 0, 255).astype(np.uint8))
    return a, b


def _dinov2_dir(path):
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    Dinov2Model(
        Dinov2Config(
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            patch_size=14,
            image_size=224,
        )
    ).save_pretrained(path)
    return path


def _eval_cli(samples, ref, out, space="efficientnet-lite0", *extra: str):
    """``sfd eval SAMPLES --ref REF`` on the CPU into ``out``: (the CLI result, its JSON)."""
    args = ["eval", str(samples), "--ref", str(ref), "--feature-space", space, *extra]
    res = CliRunner().invoke(main, [*args, "--device", "cpu", "--no-progress", "--out", str(out)])
    assert res.exit_code == 0, res.output
    return res, json.loads(Path(out).read_text())


def test_efficientnet_fd_equals_closed_form_on_its_features(npzs):
    a, b = npzs
    fn = offline_feature_fn("efficientnet-lite0")
    fa = fn(torch.from_numpy(np.load(a)["arr_0"]).permute(0, 3, 1, 2)).numpy()
    fb = fn(torch.from_numpy(np.load(b)["arr_0"]).permute(0, 3, 1, 2)).numpy()
    assert fa.shape == (12, 1280)
    expected = frechet_distance(
        FeatureStats(fa.mean(0), np.cov(fa, rowvar=False)),
        FeatureStats(fb.mean(0), np.cov(fb, rowvar=False)),
        method="eigh",
    )
    got = frechet_distance_with(fn, a, b, batch_size=5)  # batches do not matter
    assert got == pytest.approx(expected, rel=1e-6)
    assert got > 0


def test_cli_offline_fd_is_zero_on_itself_and_symmetric(npzs, tmp_path):
    a, b = npzs
    out = tmp_path / "r.json"
    _, got = _eval_cli(a, a, out)
    assert abs(got["fd_efficientnet_lite0"]) < 1e-4  # fp64 rounding
    fds = [_eval_cli(x, y, out)[1]["fd_efficientnet_lite0"] for x, y in ((a, b), (b, a))]
    assert fds[0] == pytest.approx(fds[1], rel=1e-6) and fds[0] > 0  # eigh rounding


def test_cli_fd_dinov2_uses_the_cls_token_of_a_local_model(npzs, tmp_path):
    a, b = npzs
    path = _dinov2_dir(tmp_path / "dino")
    fn = offline_feature_fn("dinov2", path)
    feats = fn(torch.from_numpy(np.load(a)["arr_0"][:2]).permute(0, 3, 1, 2))
    assert feats.shape == (2, 32)
    _, got = _eval_cli(a, b, tmp_path / "d.json", "dinov2", "--feature-weights", str(path))
    assert got["fd_dinov2"] > 0


def test_cli_offline_fd_errors(npzs, tmp_path):
    a, _ = npzs
    runner = CliRunner()
    res = runner.invoke(main, ["eval", str(a), "--ref", str(a), "--feature-space", "dinov2"])
    assert res.exit_code != 0 and "DINOv2" in res.output
    res = runner.invoke(main, ["eval", str(a), "--ref", str(a)])
    assert res.exit_code != 0 and "--inception-weights" in res.output
    stats = tmp_path / "ref.safetensors"
    stats.write_bytes(b"x")
    res = runner.invoke(
        main, ["eval", str(a), "--ref", str(stats), "--feature-space", "efficientnet-lite0"]
    )
    assert res.exit_code != 0 and "needs reference images" in res.output


def test_grayscale_npz_is_scored_as_its_rgb_replication(tmp_path):
    gray = _images(2)[..., :1]
    g, rgb, ref = tmp_path / "g.npz", tmp_path / "rgb.npz", tmp_path / "ref.npz"
    np.savez(g, arr_0=gray)
    np.savez(rgb, arr_0=np.repeat(gray, 3, axis=-1))
    np.savez(ref, arr_0=_images(3))
    fn = offline_feature_fn("efficientnet-lite0")
    assert frechet_distance_with(fn, g, ref) == frechet_distance_with(fn, rgb, ref)
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
        np.savez(tmp_path / "bad.npz", arr_0=np.zeros((2, 8, 8, 2), np.uint8))
        frechet_distance_with(fn, tmp_path / "bad.npz", ref)


def test_cli_feature_size_is_the_input_resolution(npzs, tmp_path):
    a, b = npzs
    res, got = _eval_cli(a, b, tmp_path / "r.json", "efficientnet-lite0", "--feature-size", "64")
    assert got["feature_size"] == 64 and "64 px" in res.output
    want = frechet_distance_with(offline_feature_fn("efficientnet-lite0", image_size=64), a, b)
    assert got["fd_efficientnet_lite0"] == pytest.approx(want, rel=1e-6)
    default = frechet_distance_with(offline_feature_fn("efficientnet-lite0"), a, b)
    assert abs(default - want) > 1e-3 * abs(want)  # 224 px is another metric
