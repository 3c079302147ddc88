"""Reference batches: ADM npz with stored statistics, image sets, and our statistics file."""

import numpy as np
import pytest
from safetensors.numpy import save_file

from sfd.eval.features import compute_inception_features
from sfd.eval.reference import compute_reference_stats, load_reference

from .helpers import TinyNet, random_images


def test_adm_reference_batch_with_stored_statistics(tmp_path):
    rng = np.random.default_rng(0)
    mu, mu_s = rng.standard_normal(4), rng.standard_normal(3)
    path = tmp_path / "VIRTUAL_ref.npz"
    np.savez(path, random_images(5), mu=mu, sigma=np.eye(4), mu_s=mu_s, sigma_s=np.eye(3))
    ref = load_reference(path)
    assert ref.num_images == 5 and ref.images is not None
    np.testing.assert_array_equal(ref.pool.mu, mu)
    np.testing.assert_array_equal(ref.spatial.sigma, np.eye(3))


def test_statistics_only_npz(tmp_path):
    path = tmp_path / "stats.npz"
    np.savez(path, mu=np.zeros(4), sigma=np.eye(4))
    ref = load_reference(path)
    assert ref.images is None and ref.spatial is None and ref.pool.mu.shape == (4,)


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"labels": np.zeros(3)}, "neither 'arr_0' images nor 'mu'"),
        ({"mu": np.zeros(4)}, "no 'sigma'"),
        ({"mu": np.zeros(4), "sigma": np.eye(3)}, "sigma"),
    ],
)
def test_bad_npz_references(tmp_path, arrays, message):
    path = tmp_path / "ref.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=message):
        load_reference(path)


def test_statistics_file_round_trip(tmp_path):
    images, net = random_images(12), TinyNet()
    out = tmp_path / "ref" / "stats.safetensors"
    written = compute_reference_stats(images, out, feature_net=net, batch_size=5)
    loaded = load_reference(out)
    direct = compute_inception_features(images, net, batch_size=12)
    assert loaded.num_images == 12 and loaded.images is None
    # Batches of 5 vs 12 change only the network's float32 rounding.
    np.testing.assert_allclose(loaded.pool.mu, direct.pool.mean, rtol=1e-6)
    np.testing.assert_allclose(
        loaded.spatial.sigma, direct.spatial.covariance, rtol=1e-5, atol=1e-7
    )
    np.testing.assert_array_equal(loaded.pool_features, written.pool_features)
    np.testing.assert_allclose(loaded.pool_features, direct.pool_features.numpy(), rtol=1e-6)


def test_statistics_file_without_features(tmp_path):
    out = tmp_path / "stats.safetensors"
    compute_reference_stats(random_images(4), out, feature_net=TinyNet(), keep_features=False)
    ref = load_reference(out)
    assert ref.pool_features is None and ref.num_images == 4


def test_foreign_safetensors_and_suffixes(tmp_path):
    path = tmp_path / "weights.safetensors"
    save_file({"mu": np.zeros(3)}, str(path))
    with pytest.raises(ValueError, match="not an sfd reference statistics file"):
        load_reference(path)
    (tmp_path / "ref.pt").write_bytes(b"")
    with pytest.raises(ValueError, match="expected an .npz"):
        load_reference(tmp_path / "ref.pt")
    with pytest.raises(ValueError, match=r"\.safetensors"):
        compute_reference_stats(random_images(4), tmp_path / "x.npz", feature_net=TinyNet())
