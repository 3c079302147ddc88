"""``evaluate`` and ``frechet_distance_with`` end to end, with a stand-in feature network."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sfd.eval.evaluate import (
    IS_SHUFFLE_SEED,
    evaluate,
    format_results,
    frechet_distance_with,
    inception_score_order,
    shuffled_inception_score,
    write_results,
)
from sfd.eval.features import compute_inception_features
from sfd.eval.inception import InceptionFeatures, as_nchw_uint8
from sfd.eval.metrics import frechet_distance, inception_score
from sfd.eval.reference import compute_reference_stats
from sfd.eval.stats import FeatureStats, RunningStats

from .helpers import TinyNet, random_images

SAMPLES, REF = random_images(24, seed=1), random_images(20, seed=2)


def test_identical_sets_score_perfectly():
    r = evaluate(SAMPLES, SAMPLES.copy(), feature_net=TinyNet(), split_size=8)
    assert r["num_samples"] == r["num_reference"] == 24
    assert abs(r["fid"]) < 1e-6 and abs(r["sfid"]) < 1e-6
    assert r["precision"] == r["recall"] == 1.0
    assert r["inception_score"] >= 1.0


def test_results_do_not_depend_on_batch_size(tmp_path):
    np.savez(tmp_path / "samples.npz", SAMPLES)
    runs = [
        evaluate(tmp_path / "samples.npz", REF, feature_net=TinyNet(), batch_size=b, split_size=8)
        for b in (3, 7, 100)
    ]
    for r in runs[1:]:
        assert r.keys() == runs[0].keys()
        for key, value in r.items():
            assert value == pytest.approx(runs[0][key], rel=1e-5, abs=1e-7), key


def test_stored_reference_statistics_take_precedence(tmp_path):
    # As in ADM's read_statistics: mu/sigma in the reference npz are used for FID/sFID,
    # while precision/recall still use the reference images.
    net = TinyNet()
    own = compute_inception_features(SAMPLES, net)
    pool, spatial = own.pool.to_feature_stats(), own.spatial.to_feature_stats()
    path = tmp_path / "VIRTUAL_ref.npz"
    np.savez(path, REF, mu=pool.mu, sigma=pool.sigma, mu_s=spatial.mu, sigma_s=spatial.sigma)
    r = evaluate(SAMPLES, path, feature_net=net, metrics=("fid", "sfid", "precision"))
    assert abs(r["fid"]) < 1e-6 and abs(r["sfid"]) < 1e-6
    assert (
        r["precision"]
        == evaluate(SAMPLES, REF, feature_net=net, metrics=["precision"])["precision"]
    )
    assert set(r) == {"num_samples", "num_reference", "fid", "sfid", "precision"}


def test_statistics_file_reference_equals_image_reference(tmp_path):
    net = TinyNet()
    compute_reference_stats(REF, tmp_path / "ref.safetensors", feature_net=net)
    from_file = evaluate(SAMPLES, tmp_path / "ref.safetensors", feature_net=net, split_size=8)
    from_images = evaluate(SAMPLES, REF, feature_net=net, split_size=8)
    for key, value in from_images.items():
        assert from_file[key] == pytest.approx(value, rel=1e-6), key


def test_reference_without_features_cannot_give_precision(tmp_path):
    net = TinyNet()
    path = tmp_path / "ref.safetensors"
    compute_reference_stats(REF, path, feature_net=net, keep_features=False)
    with pytest.raises(ValueError, match="precision"):
        evaluate(SAMPLES, path, feature_net=net)
    r = evaluate(SAMPLES, path, feature_net=net, metrics=("fid", "sfid", "inception_score"))
    assert r["num_reference"] == 20 and r["fid"] > 0


def test_unknown_metric():
    with pytest.raises(ValueError, match="unknown metrics"):
        evaluate(SAMPLES, REF, feature_net=TinyNet(), metrics=("kid",))


def mean_colour(images: torch.Tensor) -> torch.Tensor:
    return images.float().mean(dim=(2, 3))  # (B, 3)


def test_frechet_distance_with_any_feature_function():
    expected = frechet_distance(*(_numpy_stats(mean_colour, x) for x in (SAMPLES, REF)))
    got = frechet_distance_with(mean_colour, SAMPLES, REF, batch_size=5)
    assert got == pytest.approx(expected, rel=1e-6)
    ref_stats = RunningStats(3).update(mean_colour(torch.from_numpy(REF).permute(0, 3, 1, 2)))
    assert frechet_distance_with(mean_colour, SAMPLES, ref_stats) == pytest.approx(expected, 1e-6)


def _numpy_stats(fn, images: np.ndarray) -> FeatureStats:
    feats = fn(torch.from_numpy(images).permute(0, 3, 1, 2)).double().numpy()
    return FeatureStats(feats.mean(0), np.cov(feats, rowvar=False))


def test_feature_function_must_return_rows():
    with pytest.raises(ValueError, match=r"\(B, D\)"):
        frechet_distance_with(lambda b: b.float().mean(), SAMPLES, REF)


def test_format_and_write_results(tmp_path):
    results = {"num_samples": 10, "fid": 1.23456, "precision": 0.5}
    table = format_results(results)
    assert "FID" in table and "1.2346" in table and "samples" in table
    write_results(results, tmp_path / "out" / "metrics.json")
    assert json.loads((tmp_path / "out" / "metrics.json").read_text()) == results


def test_inception_features_do_not_depend_on_batch_size(inception):
    images = random_images(2, size=24, seed=3)
    one = compute_inception_features(images, inception, batch_size=2)
    two = compute_inception_features(images, inception, batch_size=1)
    torch.testing.assert_close(one.pool_features, two.pool_features, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(one.spatial.mean, two.spatial.mean, rtol=1e-4, atol=1e-5)
    assert one.pool_features.shape == (2, 2048) and one.spatial.dim == 2023


class ClassNet:
    """Pool features that say which of K classes an image shows (red channel = 20 * class)."""

    classes = 10

    def __call__(self, images: torch.Tensor) -> InceptionFeatures:
        x = as_nchw_uint8(images).float()
        label = (x[:, 0].mean(dim=(1, 2)) / 20).round().long()  # (B,)
        noise = x[:, 1].flatten(1)[:, : self.classes] / 255  # (B, K) per-image variation
        pool = 3 * F.one_hot(label, self.classes).float() + 2 * noise
        return InceptionFeatures(pool, x[:, 2].flatten(1)[:, :4])

    def logits(self, pool3: torch.Tensor) -> torch.Tensor:
        return pool3


def _class_probabilities(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, k) peaked class probabilities, class-sorted (n / k of each class, in order)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(k), n // k)
    logits = rng.normal(size=(n, k)) + 4 * np.eye(k)[labels]
    return np.exp(logits) / np.exp(logits).sum(1, keepdims=True), labels


def test_inception_score_does_not_depend_on_the_sample_order():
    n, k, split = 2000, 10, 200
    probs, labels = _class_probabilities(n, k, seed=0)
    shuffled = probs[np.random.default_rng(1).permutation(n)]
    interleave = np.argsort(np.arange(n) % (n // k), kind="stable")
    assert (labels[interleave][: 2 * k] == np.arange(2 * k) % k).all()  # as sfd sample: i mod K
    interleaved = probs[interleave]
    scores = [shuffled_inception_score(p, split) for p in (probs, shuffled, interleaved)]
    assert scores[1] == pytest.approx(scores[0], rel=0.02)
    assert scores[2] == pytest.approx(scores[0], rel=0.02)
    # the naive file-order computation would not pass: each split of the sorted batch is 1 class
    assert inception_score(probs, split) < 0.5 * inception_score(shuffled, split)
    # the order is a fixed, seeded numpy permutation
    assert (inception_score_order(n) == np.random.default_rng(IS_SHUFFLE_SEED).permutation(n)).all()
    assert shuffled_inception_score(probs, split) == inception_score(
        probs[inception_score_order(n)], split
    )


def test_evaluate_scores_a_class_sorted_file_like_a_shuffled_one():
    n, k = 400, ClassNet.classes
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 8, 8, 3)).astype(np.uint8)
    images[..., 0] = 20 * np.repeat(np.arange(k), n // k)[:, None, None]  # class-sorted
    shuffled = images[rng.permutation(n)]

    def score(x, **kw):
        r = evaluate(
            x, x, feature_net=ClassNet(), metrics=("inception_score",), split_size=40, **kw
        )
        return r["inception_score"]

    assert score(shuffled) == pytest.approx(score(images), rel=0.03)
    assert score(images, is_shuffle_seed=None) < 0.5 * score(images)  # file order: 1 class/split
