"""The training step: fused AdamW (the default) against torch's for-loop, skips, kernel choice."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from safetensors.torch import load_file

from sfd.training.checkpoint import load_optimizer_tensors, optimizer_tensors
from sfd.training.loop import Trainer, train
from tests.helpers import tiny_config, write_synthetic_latents


@pytest.fixture(scope="module")
def latents(tmp_path_factory):
    d = tmp_path_factory.mktemp("latents")
    return write_synthetic_latents(d, tiny_config(), count=24, shard_size=10)


def last_weights(run, steps):
    return load_file(str(run / f"checkpoints/step-{steps:07d}/model.safetensors"))


def test_fused_adamw_tracks_the_for_loop_within_fp32_rounding(latents, tmp_path):
    cfg = tiny_config(total_steps=4, global_batch_size=8, log_every=1)
    fused = train(cfg, latents, tmp_path / "fused", progress=False)
    loop = train(
        dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, fused_adamw=False)),
        latents,
        tmp_path / "loop",
        progress=False,
    )
    for a, b in zip(fused.history, loop.history, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    a, b = last_weights(tmp_path / "fused", 4), last_weights(tmp_path / "loop", 4)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("fused", [True, False])
def test_nonfinite_step_leaves_weights_moments_and_ema(latents, tmp_path, fused):
    cfg = tiny_config(total_steps=2, global_batch_size=4, fused_adamw=fused)
    trainer = Trainer(cfg, latents, tmp_path)
    trainer.run(max_steps=1, progress=False)  # moments exist
    before = [
        {k: v.clone() for k, v in m.state_dict().items()} for m in (trainer.model, trainer.ema)
    ]
    moments = {k: v.clone() for k, v in optimizer_tensors(trainer.optimizer)[0].items()}
    for p in trainer.model.parameters():
        p.grad = torch.full_like(p, float("inf"))
    trainer._apply_update(torch.zeros(4))
    assert trainer.skipped == 1
    for state, module in zip(before, (trainer.model, trainer.ema), strict=True):
        assert all(torch.equal(state[k], v) for k, v in module.state_dict().items())
    after = optimizer_tensors(trainer.optimizer)[0]
    assert all(torch.equal(moments[k], after[k]) for k in moments)  # the step count too


def test_resume_keeps_this_process_adamw_kernel(latents, tmp_path):
    loop = Trainer(tiny_config(total_steps=1, fused_adamw=False), latents, tmp_path / "a")
    loop.run(progress=False)
    tensors, groups = optimizer_tensors(loop.optimizer)
    fused = Trainer(tiny_config(total_steps=1), latents, tmp_path / "b")
    path = tmp_path / "opt.safetensors"
    from safetensors.torch import save_file

    save_file(tensors, str(path), {"param_groups": groups})
    load_optimizer_tensors(fused.optimizer, path)
    assert all(g["fused"] for g in fused.optimizer.param_groups)
    fused.run(progress=False)  # the loaded (CPU, float) step counts work with the fused kernel


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_step_does_not_sync_the_host(latents, tmp_path):
    trainer = Trainer(tiny_config(total_steps=3), latents, tmp_path, device="cuda")
    batches = trainer.micro_batches(0)
    trainer.train_step(trainer.module, batches)  # warm-up: lazy state creation may sync
    torch.cuda.set_sync_debug_mode("error")
    try:
        trainer.train_step(trainer.module, batches)
    finally:
        torch.cuda.set_sync_debug_mode("default")
