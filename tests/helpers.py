"""Test utilities: tiny configs, the upstream fixture set, and the synthetic latent and feature
sets of ``sfd.tools.synthetic``."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from sfd.config import Config, preset
from sfd.tools.synthetic import write_feature_set, write_synthetic_latents

__all__ = ["FIXTURES", "FIXTURES_ROOT", "TINY_DINOV2", "tiny_config", "tiny_train_args"]
__all__ += ["write_feature_set", "write_synthetic_latents"]  # shared with the crash campaign

# The release-produced parity sets ship in tests/fixtures (data only; MIT, see LICENSE-upstream).
# SFD_UPSTREAM_FIXTURES names another set of the upstream_parity layout (e.g. the hidden one).
FIXTURES_ROOT = Path(__file__).resolve().parent / "fixtures"
FIXTURES = Path(os.environ.get("SFD_UPSTREAM_FIXTURES") or FIXTURES_ROOT / "upstream_parity")

# A one-layer DINOv2 (random weights) for tests of the encoder path.
TINY_DINOV2 = dict(
    hidden_size=32,
    num_hidden_layers=1,
    num_attention_heads=2,
    intermediate_size=64,
    patch_size=14,
    image_size=224,
)


def tiny_config(**train_overrides) -> Config:
    cfg = preset("tiny")
    train = dataclasses.replace(cfg.train, **train_overrides)
    return dataclasses.replace(cfg, train=train)


def tiny_train_args(data, out, steps: int, *settings: str, batch: int = 4) -> list:
    """``sfd train`` arguments for the ``tiny`` preset on the CPU: ``steps`` steps of global
    batch ``batch``, then ``--set`` each of ``settings``."""
    args = ["train", "--preset", "tiny", "--data", data, "--out", out, "--device", "cpu"]
    args += ["--set", f"train.total_steps={steps}", "--set", f"train.global_batch_size={batch}"]
    return args + [arg for s in settings for arg in ("--set", s)]
