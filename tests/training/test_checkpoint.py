"""Checkpoints describe themselves (config, step, latent statistics) and load strictly."""

import dataclasses

import pytest
import torch
from safetensors.torch import save_file

from sfd.errors import BadInputError, MismatchError, MissingInputError
from sfd.latents.composite import LatentStats
from sfd.model import LightningDiT
from sfd.training.checkpoint import (
    list_checkpoints,
    load_weights,
    prune_checkpoints,
    read_checkpoint,
    save_checkpoint,
)
from tests.helpers import tiny_config


def _save(run_dir, step, cfg, model):
    stats = LatentStats(torch.arange(6.0), torch.full((6,), 2.0))
    return save_checkpoint(run_dir, step=step, config=cfg, stats=stats, ema=model, model=model)


def test_a_checkpoint_describes_itself_and_the_newest_is_read(tmp_path):
    cfg = tiny_config()
    torch.manual_seed(0)
    model = LightningDiT.from_configs(cfg.model, cfg.latent)
    for step in (10, 2, 30):
        _save(tmp_path, step, cfg, model)
    assert [p.name for p in list_checkpoints(tmp_path)] == [
        "step-0000002",
        "step-0000010",
        "step-0000030",
    ]
    ckpt = read_checkpoint(tmp_path)
    assert ckpt.step == 30 and ckpt.config == cfg and torch.equal(ckpt.stats.std, torch.ones(6) * 2)
    other = LightningDiT.from_configs(cfg.model, cfg.latent)
    load_weights(other, ckpt.path / "ema.safetensors")
    theirs, ours = other.state_dict(), model.state_dict()
    assert all(torch.equal(theirs[k], ours[k]) for k in ours)
    prune_checkpoints(tmp_path, keep_last=1)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-0000030"]


def test_loading_is_strict(tmp_path):
    cfg = tiny_config()
    path = _save(tmp_path, 1, cfg, LightningDiT.from_configs(cfg.model, cfg.latent))
    wider = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, width=32))
    with pytest.raises(MismatchError, match="has shape"):
        load_weights(LightningDiT.from_configs(wider.model, wider.latent), path / "ema.safetensors")
    with pytest.raises(MissingInputError, match="holds no checkpoint"):
        read_checkpoint(tmp_path / "checkpoints")
    (tmp_path / "plain").mkdir()
    save_file({"w": torch.zeros(1)}, str(tmp_path / "plain" / "ema.safetensors"))
    with pytest.raises(BadInputError, match="not an sfd checkpoint"):
        read_checkpoint(tmp_path / "plain")
