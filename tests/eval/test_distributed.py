"""Two gloo processes on CPU give the single-process statistics and metrics."""

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sfd.eval.evaluate import evaluate
from sfd.eval.features import compute_inception_features

from .helpers import TinyNet, random_images

WORLD = 2


def _worker(rank: int, init_file: str, samples: str, ref: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        net = TinyNet()
        result = {
            "metrics": evaluate(samples, ref, feature_net=net, batch_size=2, split_size=4),
            "features": compute_inception_features(samples, net, batch_size=3),
        }
        torch.save(result, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_processes_equal_one(tmp_path):
    samples, ref = tmp_path / "samples.npz", tmp_path / "ref.npz"
    np.savez_compressed(samples, random_images(11, seed=1))  # odd: unequal shards, streamed
    np.savez(ref, random_images(9, seed=2))
    args = (str(tmp_path / "rendezvous"), str(samples), str(ref), str(tmp_path))
    mp.spawn(_worker, args=args, nprocs=WORLD, join=True)

    net = TinyNet()
    metrics = evaluate(samples, ref, feature_net=net, batch_size=5, split_size=4)
    features = compute_inception_features(samples, net, batch_size=11)
    for rank in range(WORLD):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        assert got["metrics"].keys() == metrics.keys()
        for key, value in metrics.items():
            assert got["metrics"][key] == pytest.approx(value, rel=1e-5, abs=1e-7), key
        torch.testing.assert_close(got["features"].pool_features, features.pool_features)
        for name in ("pool", "spatial"):
            # float64 sums of features that differ in float32 rounding between batchings.
            torch.testing.assert_close(
                getattr(got["features"], name).as_tensor(),
                getattr(features, name).as_tensor(),
                rtol=1e-5,
                atol=1e-9,
            )
