"""The training MFU a step could reach if it did nothing but its own matmuls.

``sfd bench`` reports MFU as the step's matmul FLOP/s over the FLOP/s of one large square
matmul (1536² on CPU) timed in the same run. A step's matmuls are not that shape: at the
paper's latent (``S``: 256 tokens x batch 8 = 2,048 rows, width 384) their inner dimensions are
384-1,024, and the adaLN and time-embedding matmuls have only 8 rows. This script records every
``F.linear`` of one forward pass of the preset's model (its (rows, in, out) shapes), times each
distinct shape's forward and its two backward matmuls (dX = dY W, dW = dY^T X) and one
attention forward + backward (SDPA) at the model's shape, alternated with the 1536² peak so a
drifting load hits all alike, and prints

    ceiling = (matmul FLOPs of the step) / (time of those matmuls alone) / (1536² peak FLOP/s),

an upper bound of the step's MFU on this machine: no fusion or overhead removal can make a
step's matmuls run faster than they run alone.

    python scripts/matmul_ceiling.py --preset S --batch-size 8 [--threads 2] [--iters 7]
"""

from __future__ import annotations

import argparse
import json
import platform

import torch

from sfd.bench.throughput import forward_flops_per_image, peak_matmul, time_interleaved
from sfd.config import apply_overrides, preset
from sfd.hardware import cpu_model_name
from sfd.tools.matmuls import shape_fns


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--preset", default="S")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--iters", type=int, default=7)
    p.add_argument("--set", dest="overrides", action="append", default=[])
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfg = apply_overrides(preset(a.preset), a.overrides)
    device = torch.device("cpu")

    fns, flops, names, counts = shape_fns(cfg, a.batch_size)
    peak_fn, peak_flops = peak_matmul(device, torch.float32)
    times = time_interleaved([peak_fn, *fns], device, warmup=2, iters=a.iters)
    peak = peak_flops / times[0]
    alone = sum(t * c for t, c in zip(times[1:], counts, strict=True))
    total = sum(flops)
    model_flops = 3 * a.batch_size * forward_flops_per_image(cfg, with_repa=True)
    rows = [
        {
            "matmul": nm,
            "ms": round(1e3 * t * c, 2),
            "tflops": round(f / (t * c) / 1e12, 4),
            "of_peak": round(f / (t * c) / peak, 3),
        }
        for nm, t, c, f in zip(names, times[1:], counts, flops, strict=True)
    ]
    result = {
        "preset": a.preset,
        "batch": a.batch_size,
        "threads": a.threads,
        "cpu": f"{cpu_model_name()} ({platform.machine()})",
        "peak_tflops_1536": round(peak / 1e12, 4),
        "step_matmul_gflops_counted_here": round(total / 1e9, 2),
        "step_matmul_gflops_sfd_bench": round(model_flops / 1e9, 2),
        "matmuls_alone_ms": round(1e3 * alone, 1),
        "mfu_ceiling": round(total / alone / peak, 3),
        "parts": rows,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
