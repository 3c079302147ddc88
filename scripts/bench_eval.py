"""Measure evaluation throughput of `sfd.eval` on this machine.

Times the streaming Inception feature pass (TF1 resize to 299, FID Inception-v3, pool3 and
spatial float64 statistics) on random uint8 images, then the fixed-cost parts of scoring:
the two Fréchet distances (scipy sqrtm of 2048x2048 and 2023x2023 products) and the softmax.
Random weights (He-initialised so activations have realistic magnitudes) unless
--inception-weights points to pt_inception-2015-12-05-6726825d.pth; speed does not depend on
the weights.

    python scripts/bench_eval.py --num 512 --size 256 --batch-size 32
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch

from sfd.eval.features import compute_inception_features
from sfd.eval.inception import FIDInceptionV3, load_inception
from sfd.eval.metrics import frechet_distance, inception_score, precision_recall
from sfd.eval.stats import FeatureStats


def build_net(weights: str | None, device: str) -> FIDInceptionV3:
    if weights:
        return load_inception(weights, device)
    torch.manual_seed(0)
    net = FIDInceptionV3()
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    return net.to(device)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        return names[0] if names else platform.machine()
    except OSError:
        return platform.processor() or platform.machine()


def hardware(device: str) -> str:
    cpu = cpu_name()
    lines = [
        f"platform: {platform.platform()}",
        f"cpu: {cpu}, os.cpu_count()={os.cpu_count()}, torch threads={torch.get_num_threads()}",
        f"python {platform.python_version()}, torch {torch.__version__}, device {device}",
    ]
    if device.startswith("cuda"):
        lines.append(f"gpu: {torch.cuda.get_device_name(device)}")
    if hasattr(os, "getloadavg"):
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        lines.append(f"load average (1, 5, 15 min): {load}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num", type=int, default=512, help="images to featurise")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--inception-weights", default=None)
    parser.add_argument("--skip-scoring", action="store_true", help="time the features only")
    args = parser.parse_args()

    print(hardware(args.device))
    net = build_net(args.inception_weights, args.device)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.num, args.size, args.size, 3), dtype=np.uint8)
    compute_inception_features(images[: args.batch_size], net, device=args.device)  # warm-up

    start = time.perf_counter()
    result = compute_inception_features(images, net, batch_size=args.batch_size, device=args.device)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    print(
        f"features: {args.num} images {args.size}x{args.size}, batch {args.batch_size}: "
        f"{seconds:.1f} s, {args.num / seconds:.2f} images/s "
        f"(50K samples + 10K reference: {60_000 / (args.num / seconds) / 3600:.2f} h)"
    )

    if not args.skip_scoring:
        time_fixed_costs(net, result.pool_features, args.device)


def time_fixed_costs(net: FIDInceptionV3, pool_features: torch.Tensor, device: str) -> None:
    """Scoring costs that do not grow with the feature pass: sqrtm, softmax, precision/recall."""
    rng = np.random.default_rng(1)
    for dim in (2048, 2023):  # full-rank covariances, as with 50K samples
        a, b = rng.standard_normal((2, dim, dim)) / np.sqrt(dim)
        s1, s2 = FeatureStats(np.zeros(dim), a @ a.T), FeatureStats(np.ones(dim), b @ b.T)
        start = time.perf_counter()
        frechet_distance(s1, s2)
        print(f"Fréchet distance, {dim}-d (scipy sqrtm): {time.perf_counter() - start:.1f} s")
    start = time.perf_counter()
    logits = net.logits(pool_features.to(device))
    inception_score(torch.softmax(logits.double(), 1).cpu())
    print(f"Inception Score of {len(pool_features)}: {time.perf_counter() - start:.2f} s")
    n = 2048
    feats = torch.from_numpy(rng.standard_normal((2, n, 2048)).astype(np.float32))
    start = time.perf_counter()
    precision_recall(feats[0], feats[1], device=device)
    seconds = time.perf_counter() - start
    pairs_adm = 50_000**2 + 10_000**2 + 50_000 * 10_000  # radii of both sets + cross distances
    print(
        f"precision/recall {n} vs {n}: {seconds:.1f} s "
        f"(50K vs 10K extrapolated: {seconds * pairs_adm / (3 * n * n) / 60:.0f} min)"
    )


if __name__ == "__main__":
    main()
