import math
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from sfd.bench.throughput import forward_flops_per_image, run_bench, time_interleaved
from sfd.config import apply_overrides, preset
from sfd.model import LightningDiT


def test_analytic_flops_match_torch_flop_counter():
    cfg = apply_overrides(preset("tiny"), ["model.depth=3"])
    model = LightningDiT.from_configs(cfg.model, cfg.latent).eval()
    x = torch.randn(2, cfg.latent.channels, cfg.latent.size, cfg.latent.size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x, t_tex=torch.rand(2), t_sem=torch.rand(2), y=torch.zeros(2, dtype=torch.long))
    measured = counter.get_total_flops() / 2  # per image; the counter does not see SDPA on CPU
    assert math.isclose(forward_flops_per_image(cfg, attention=False), measured, rel_tol=0.01)
    t, d = cfg.latent.size**2, cfg.model.width
    attention = forward_flops_per_image(cfg) - forward_flops_per_image(cfg, attention=False)
    assert attention == cfg.model.depth * 2 * (2 * t * t * d)  # QK^T and AV


def test_bench_runs_and_reports_finite_figures():
    result = run_bench(preset("tiny"), batch_size=4, warmup=1, iters=1, sample_steps=2)
    for name in ("train_img_per_s", "train_mfu", "matmul_peak_tflops", "sample_ms_per_forward"):
        value = getattr(result, name)
        assert math.isfinite(value) and value > 0, name
    assert "train_mfu" in result.table()


def test_time_interleaved_alternates_the_order_and_keeps_each_functions_times():
    calls = []
    fast = lambda: calls.append("fast")  # noqa: E731
    slow = lambda: (calls.append("slow"), time.sleep(0.004))  # noqa: E731
    t_fast, t_slow = time_interleaved([fast, slow], torch.device("cpu"), warmup=1, iters=4)
    rounds = [tuple(calls[i : i + 2]) for i in range(2, len(calls), 2)]
    assert rounds == [("fast", "slow"), ("slow", "fast")] * 2  # after the warm-up round
    assert t_slow > 0.003 > t_fast
