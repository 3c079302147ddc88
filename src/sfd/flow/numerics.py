"""Bit-stable numerics shared by ``sfd sample`` and the diffusers pipeline.

- :func:`padded_batches` splits rows into groups of a fixed size, the last padded by repetition
  (the model in :class:`FixedBatch`, the decoder in ``sfd sample`` and in the pipeline);
- :class:`FixedBatch` runs a model on a fixed number of rows at a time, so an image's velocity does
  not depend on how many images are sampled together;
- :func:`to_uint8` turns decoded images into bytes, rounded to nearest as the PNGs are written.

Like the rest of ``sfd.flow`` this file imports only torch (a diffusers export carries it
verbatim; docs/ECOSYSTEM.md).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn


def padded_batches(
    num: int, size: int, device: torch.device | str | None = None
) -> Iterator[tuple[torch.Tensor, int]]:
    """Rows ``[0, num)`` in groups of exactly ``size``, the last padded by repeating row
    ``num - 1``: (the group's row indices, how many of them are real)."""
    for lo in range(0, num, size):
        yield torch.arange(lo, lo + size, device=device).clamp(max=num - 1), min(size, num - lo)


class FixedBatch(nn.Module):
    """Runs a model on exactly ``size`` rows at a time (the last group padded by repetition).

    Batched matmuls can differ in the last bits with the number of rows; with a fixed row count
    an image's velocity does not depend on how many images are sampled together.
    """

    def __init__(self, module: nn.Module, size: int) -> None:
        super().__init__()
        self.module, self.size = module, size

    @property
    def null_class(self) -> int:
        return self.module.null_class

    def forward(self, x: torch.Tensor, *, t_tex, t_sem, y: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        t_tex = torch.as_tensor(t_tex, device=x.device, dtype=torch.float32).reshape(-1).expand(b)
        t_sem = torch.as_tensor(t_sem, device=x.device, dtype=torch.float32).reshape(-1).expand(b)
        outs = []
        for idx, real in padded_batches(b, self.size, x.device):
            out = self.module(x[idx], t_tex=t_tex[idx], t_sem=t_sem[idx], y=y[idx])
            outs.append(out[:real])
        return torch.cat(outs)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float (B, C, H, W) -> uint8 (B, H, W, C), rounded to nearest (not truncated)."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1)
