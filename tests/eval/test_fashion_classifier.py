"""The in-domain Fashion-MNIST evaluator: FD_FMNIST properties, a tiny classifier trained on
the real data (far above chance, real-vs-real floor below real-vs-noise), the cached stage,
exact reproducibility, clear errors, and `sfd eval --feature-space fashion-mnist`."""

from __future__ import annotations

import json
import math
import os
import re
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from sfd.cli import main
from sfd.data.fashion_mnist import DEFAULT_ROOT
from sfd.eval.fashion_classifier import (
    META_FILE,
    WEIGHTS_FILE,
    FashionClassifier,
    class_accuracy,
    classifier_outputs,
    default_classifier_dir,
    fd_fmnist,
    gray_input,
    load_fashion_classifier,
    load_split,
    save_fashion_classifier,
    train_fashion_classifier,
)

have_data = all(
    (DEFAULT_ROOT / f"{name}-idx{d}-ubyte.gz").exists()
    for name, d in (
        ("train-images", 3),
        ("train-labels", 1),
        ("t10k-images", 3),
        ("t10k-labels", 1),
    )
)
# `make test` sets SFD_REQUIRE_FASHION_MNIST=1 (it installs the package), so CI cannot skip these.
needs_data = pytest.mark.skipif(
    not have_data and not os.environ.get("SFD_REQUIRE_FASHION_MNIST"),
    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)",
)
TINY = {"steps": 100, "batch_size": 64, "train_images": 2000, "test_images": 1000}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A classifier trained briefly on 2,000 real training images (once for the module)."""
    out = tmp_path_factory.mktemp("classifier")
    return out, train_fashion_classifier(out, seed=0, **TINY)


@pytest.fixture(scope="module")
def real_test():
    """The first 2,000 real test images, uint8 (N, 32, 32), and their labels."""
    images, labels = load_split(None, "test", 2000)
    return images.numpy(), labels.numpy()


def _features(seed: int, n: int = 300, d: int = 8) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) @ rng.normal(size=(d, d))


def test_fd_is_zero_on_itself_symmetric_and_the_squared_shift_of_a_translate():
    a, b = _features(0), _features(1)
    assert abs(fd_fmnist(a, a)) < 1e-6
    assert fd_fmnist(a, b) == pytest.approx(fd_fmnist(b, a), rel=1e-6)
    assert fd_fmnist(a, b) > 0
    shift = np.linspace(-1, 2, a.shape[1])
    assert fd_fmnist(a, a + shift) == pytest.approx(float(shift @ shift), rel=1e-6)
    with pytest.raises(ValueError, match="N >= 2"):
        fd_fmnist(a[:1], b)


def test_gray_input_accepts_every_layout_of_the_same_images():
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (4, 28, 28), dtype=np.uint8)
    want = gray_input(gray)
    assert want.shape == (4, 1, 28, 28) and want.min() >= -1 and want.max() <= 1
    rgb = np.repeat(gray[..., None], 3, axis=-1)  # (N, H, W, 3): the pipeline's replication
    for images in (gray[..., None], rgb, torch.from_numpy(rgb).permute(0, 3, 1, 2)):
        assert torch.equal(gray_input(images), want)
    with pytest.raises(ValueError, match="uint8"):
        gray_input(gray.astype(np.float32))
    net = FashionClassifier().initialize_weights(torch.Generator().manual_seed(0)).eval()
    assert net.features(want).shape == (4, 128)  # 28 px is resized to 32 inside prepare
    with pytest.raises(ValueError, match=r"\(B, 1, H, H\)"):
        net(torch.zeros(2, 3, 32, 32))


def test_save_load_round_trip_gives_identical_logits(tmp_path):
    net = FashionClassifier().initialize_weights(torch.Generator().manual_seed(1))
    with torch.no_grad():  # train-mode passes move the BatchNorm running statistics
        net(torch.rand(8, 1, 32, 32) * 2 - 1)
    net.eval()
    meta = save_fashion_classifier(net, tmp_path / "c", {"note": "x"})
    assert meta == json.loads((tmp_path / "c" / META_FILE).read_text())
    loaded = load_fashion_classifier(tmp_path / "c")
    assert not loaded.training
    images = np.random.default_rng(2).integers(0, 256, (5, 32, 32), dtype=np.uint8)
    a, fa = classifier_outputs(net, images)
    b, fb = classifier_outputs(loaded, images)
    assert torch.equal(a, b) and torch.equal(fa, fb)
    one_by_one, _ = classifier_outputs(loaded, images, batch_size=1)
    torch.testing.assert_close(one_by_one, b, rtol=1e-5, atol=1e-5)  # only kernel rounding
    assert a.dtype == torch.float32 and fb.dtype == torch.float64 and fb.shape == (5, 128)


def test_default_dir_follows_sfd_cache_without_a_packaged_classifier(monkeypatch, tmp_path):
    import sfd.eval.fashion_classifier as fc

    monkeypatch.setattr(fc, "PACKAGED_CLASSIFIER", tmp_path / "not-packaged")
    monkeypatch.setenv("SFD_CACHE", str(tmp_path))
    assert default_classifier_dir() == tmp_path / "fashion-mnist-classifier"
    monkeypatch.delenv("SFD_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_classifier_dir() == tmp_path / "home/.cache/sfd/fashion-mnist-classifier"


def test_bad_classifier_directories_are_named(tmp_path):
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "missing"))):
        load_fashion_classifier(tmp_path / "missing")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / META_FILE).write_text("{not json")
    with pytest.raises(ValueError, match=f"{re.escape(str(bad))}.*{META_FILE}"):
        load_fashion_classifier(bad)
    with pytest.raises(ValueError, match=re.escape(str(bad))):  # a cached stage never overwrites it
        train_fashion_classifier(bad, steps=1)
    assert (bad / META_FILE).read_text() == "{not json"
    (bad / META_FILE).write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="format"):
        load_fashion_classifier(bad)
    net = FashionClassifier()
    save_fashion_classifier(net, bad, {})
    (bad / WEIGHTS_FILE).write_bytes(b"garbage")
    with pytest.raises(ValueError, match=f"{re.escape(str(bad))}: malformed"):
        load_fashion_classifier(bad)


@needs_data
def test_tiny_classifier_is_far_above_chance_and_separates_real_from_noise(tiny, real_test):
    out, meta = tiny
    assert meta == json.loads((out / META_FILE).read_text())
    assert meta["test_images"] == 1000 and meta["train_images"] == 2000
    assert meta["test_accuracy"] > 0.6  # chance: 0.1
    net = load_fashion_classifier(out)
    images, labels = real_test
    logits, feats = classifier_outputs(net, images)
    # the weights on disk are the ones that were measured
    assert class_accuracy(logits[:1000], labels[:1000]) == meta["test_accuracy"]
    noise = np.random.default_rng(0).integers(0, 256, (1000, 32, 32), dtype=np.uint8)
    noise_logits, noise_feats = classifier_outputs(net, noise)
    floor = fd_fmnist(feats[:1000], feats[1000:])  # real vs real, disjoint sets
    assert 0 < floor < fd_fmnist(feats[:1000], noise_feats) / 10
    assert class_accuracy(noise_logits, labels[:1000]) < meta["test_accuracy"] - 0.4


@needs_data
def test_cached_stage_neither_retrains_nor_rewrites(tiny):
    out, meta = tiny
    before = {
        p: (p.stat().st_mtime_ns, p.read_bytes()) for p in (out / META_FILE, out / WEIGHTS_FILE)
    }
    assert train_fashion_classifier(out, steps=1, seed=5) == meta
    res = CliRunner().invoke(main, ["train-classifier", "--out", str(out), "--steps", "2"])
    assert res.exit_code == 0 and f"test accuracy {meta['test_accuracy']:.4f}" in res.output
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in before} == before


@needs_data
def test_same_seed_gives_identical_weights(tmp_path):
    tiny = {"steps": 3, "batch_size": 16, "train_images": 64, "test_images": 32}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        train_fashion_classifier(tmp_path / name, seed=seed, **tiny)
    a, b, c = (load_file(tmp_path / n / WEIGHTS_FILE) for n in "abc")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["project.weight"], c["project.weight"])


@needs_data
def test_cli_eval_fashion_mnist(tiny, real_test, tmp_path, monkeypatch):
    out, _ = tiny
    images, labels = real_test
    rgb = np.repeat(images[..., None], 3, axis=-1)  # as `sfd sample` writes its PNGs
    samples, ref, unlabelled = tmp_path / "s.npz", tmp_path / "r.npz", tmp_path / "u.npz"
    np.savez(samples, arr_0=rgb[:200], arr_1=labels[:200])
    np.savez(ref, arr_0=images[1000:1300, ..., None])
    np.savez(unlabelled, arr_0=rgb[:200])
    runner, result_file = CliRunner(), tmp_path / "m.json"
    args = [
        "--ref",
        str(ref),
        "--feature-space",
        "fashion-mnist",
        "--device",
        "cpu",
        "--no-progress",
        "--out",
        str(result_file),
    ]
    res = runner.invoke(main, ["eval", str(samples), "--feature-weights", str(out), *args])
    assert res.exit_code == 0, res.output
    got = json.loads(result_file.read_text())
    assert "Fréchet distance (fashion-mnist features, 32 px)" in res.output
    net = load_fashion_classifier(out)
    logits, feats = classifier_outputs(net, rgb[:200])
    _, ref_feats = classifier_outputs(net, images[1000:1300])
    assert got["fd_fashion_mnist"] == pytest.approx(fd_fmnist(feats, ref_feats), rel=1e-6)
    assert got["accuracy"] == class_accuracy(logits, labels[:200])
    # no labels -> FD only; no --feature-weights -> the default classifier (here the tiny one)
    import sfd.eval.fashion_classifier as fc

    monkeypatch.setattr(fc, "PACKAGED_CLASSIFIER", tmp_path / "not-packaged")
    monkeypatch.setenv("SFD_CACHE", str(tmp_path / "cache"))
    shutil.copytree(out, default_classifier_dir())
    res = runner.invoke(main, ["eval", str(unlabelled), *args])
    assert res.exit_code == 0, res.output
    again = json.loads(result_file.read_text())
    assert "accuracy" not in again and math.isclose(
        again["fd_fashion_mnist"], got["fd_fashion_mnist"], rel_tol=1e-9
    )
    res = runner.invoke(main, ["eval", str(samples), "--feature-size", "64", *args])
    assert res.exit_code != 0 and "32 px" in res.output


@needs_data
def test_packaged_classifier_is_the_default_and_classifies_real_test_images(real_test):
    from sfd.eval.fashion_classifier import PACKAGED_CLASSIFIER

    assert default_classifier_dir() == PACKAGED_CLASSIFIER
    meta = json.loads((PACKAGED_CLASSIFIER / META_FILE).read_text())
    assert meta["test_images"] == 10_000 and meta["test_accuracy"] > 0.9
    net = load_fashion_classifier(PACKAGED_CLASSIFIER)
    images, labels = real_test
    logits, feats = classifier_outputs(net, images)
    # its accuracy on real test images is what its file says (first 2,000 of the 10,000)
    assert class_accuracy(logits, torch.from_numpy(labels)) > 0.89
    # two disjoint halves of the real test images sit close: the floor is small
    assert fd_fmnist(feats[:1000], feats[1000:]) < 10
