"""Compiling the denoiser for speed: its transformer blocks, in place."""

from __future__ import annotations

from .lightningdit import LightningDiT


def compile_blocks(model: LightningDiT) -> None:
    """``torch.compile`` each transformer block in place (whole blocks, one graph each).

    In place, so parameter names, and therefore checkpoints, are those of the eager model.
    Training (``train.compile``) and sampling (``sfd sample --compile``) both use it.
    """
    for block in model.blocks:
        block.compile()
