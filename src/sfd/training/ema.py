"""Exponential moving average of model weights (decay 0.9999 every step in the release)."""

from __future__ import annotations

import copy

import torch
from torch import nn


def make_ema(model: nn.Module) -> nn.Module:
    """A frozen copy of ``model`` in eval mode to hold the average."""
    ema = copy.deepcopy(model).eval()
    ema.requires_grad_(False)
    return ema


@torch.no_grad()
def update_ema(
    ema: nn.Module, model: nn.Module, decay: float, keep: torch.Tensor | None = None
) -> None:
    """ema <- decay * ema + (1 - decay) * model for trained parameters; copy everything else.

    ``keep``: an optional 0-dim device tensor, 1 to update and 0 to leave the average as it is
    (``lerp`` by a zero weight is exact), so a skipped step needs no host sync.
    """
    src = dict(model.named_parameters())
    trained_ema, trained_src = [], []
    for name, p_ema in ema.named_parameters():
        p = src[name]
        if p.requires_grad:
            trained_ema.append(p_ema)
            trained_src.append(p.detach())
        else:
            p_ema.copy_(p)
    if trained_ema:
        weight = 1.0 - decay if keep is None else keep * (1.0 - decay)
        torch._foreach_lerp_(trained_ema, trained_src, weight)
    for b_ema, b in zip(ema.buffers(), model.buffers(), strict=True):
        b_ema.copy_(b)
