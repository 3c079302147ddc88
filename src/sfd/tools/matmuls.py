"""A training step's matmuls alone: every ``F.linear`` shape of one forward pass of a preset's
model, and closures that run each shape's forward and two backward matmuls and the attention
forward + backward, nothing else (``scripts/matmul_ceiling.py``, ``scripts/bench_release.py
--ceiling``; docs/PERFORMANCE.md)."""

from __future__ import annotations

import collections

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from sfd.model import LightningDiT


class _Linears(TorchFunctionMode):
    """Counts the (rows, in, out) shape of every F.linear call."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: collections.Counter = collections.Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear:
            x, w = args[0], args[1]
            self.shapes[(x.numel() // x.shape[-1], w.shape[1], w.shape[0])] += 1
        return func(*args, **kwargs)


def linear_shapes(cfg, batch: int) -> collections.Counter:
    model = LightningDiT.from_configs(cfg.model, cfg.latent).eval()
    lat = cfg.latent
    x = torch.randn(batch, lat.channels, lat.size, lat.size)
    t = torch.rand(batch)
    y = torch.randint(0, cfg.model.num_classes, (batch,))
    mode = _Linears()
    with torch.no_grad(), mode:
        model(x, t_tex=t, t_sem=t, y=y, return_repa=True)
    return mode.shapes


def shape_fns(cfg, batch: int) -> tuple[list, list, list, list]:
    """Per distinct matmul of one training step: a closure (forward + both backward matmuls; the
    attention forward + backward), its FLOPs over the step, its name, its count per step."""
    shapes = linear_shapes(cfg, batch)
    fns, flops, names = [], [], []
    for (m, k, n), count in sorted(shapes.items()):
        x, w, dy = torch.randn(m, k), torch.randn(n, k), torch.randn(m, n)
        fns.append(lambda x=x, w=w, dy=dy: (x @ w.t(), dy @ w, dy.t() @ x))
        flops.append(count * 3 * 2.0 * m * k * n)
        names.append(f"linear {m}x{k}->{n} (x{count})")
    md = cfg.model
    tokens = (cfg.latent.size // md.patch_size) ** 2
    head_dim = md.width // md.num_heads
    q = torch.randn(batch, md.num_heads, tokens, head_dim, requires_grad=True)

    def attention():
        q.grad = None
        F.scaled_dot_product_attention(q, q, q).sum().backward()

    fns.append(attention)
    flops.append(md.depth * 3 * 2 * 2.0 * batch * tokens * tokens * md.width)
    names.append(f"attention fwd+bwd {batch}x{md.num_heads}x{tokens}x{head_dim} (x{md.depth})")
    counts = [count for _, count in sorted(shapes.items())] + [md.depth]
    return fns, flops, names, counts


def step_matmuls(cfg, batch: int):
    """One closure doing every matmul and attention of a training step once, nothing else."""
    fns, _, _, counts = shape_fns(cfg, batch)

    def run() -> None:
        for fn, count in zip(fns, counts, strict=True):
            for _ in range(count):
                fn()

    return run
