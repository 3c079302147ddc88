"""The training step: fused AdamW (the default) against torch's for-loop, refused updates (a
non-finite loss, a loss above the spike limit), kernel choice."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from safetensors.torch import load_file, save_file

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


def snapshot(trainer) -> list[dict[str, torch.Tensor]]:
    """Model, EMA and every optimizer tensor (moments and step counts), cloned."""
    modules = [
        {k: v.clone() for k, v in m.state_dict().items()} for m in (trainer.model, trainer.ema)
    ]
    return [*modules, {k: v.clone() for k, v in optimizer_tensors(trainer.optimizer)[0].items()}]


def same(a: list[dict], b: list[dict]) -> bool:
    return all(
        x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
        for x, y in zip(a, b, strict=True)
    )


def nan_batches(trainer, step: int):
    batches = trainer.micro_batches(step)
    batches[0].x1[0] = float("nan")
    return batches


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("refusal", ["nonfinite", "spike"])
def test_a_refused_update_reports_applied_false_and_changes_nothing(
    latents, tmp_path, fused, refusal
):
    cfg = tiny_config(total_steps=2, global_batch_size=4, fused_adamw=fused)
    trainer = Trainer(cfg, latents, tmp_path)
    trainer.run(max_steps=1, progress=False)  # moments exist
    before = snapshot(trainer)
    if refusal == "nonfinite":
        result = trainer.step_fn(trainer.module, nan_batches(trainer, 1), step=1)
        assert not result.spike and result.loss is None and not torch.isfinite(result.stats[0])
    else:  # a finite loss above the limit: the loss is read on the host
        result = trainer.step_fn(trainer.module, trainer.micro_batches(1), spike_limit=0.0)
        assert result.spike and result.loss == pytest.approx(float(result.stats[0]))
    assert result.applied.dtype == torch.bool and not result.applied
    assert same(snapshot(trainer), before)  # weights, EMA, moments and step counts
    assert all(p.grad is None for p in trainer.model.parameters())
    # the same step, not refused: applied, and everything moves
    result = trainer.step_fn(trainer.module, trainer.micro_batches(1), spike_limit=math.inf)
    assert result.applied and not result.spike and result.loss == float(result.stats[0])
    after = snapshot(trainer)
    for old, new in zip(before, after, strict=True):
        assert any(not torch.equal(old[k], new[k]) for k in old)


def test_resume_keeps_this_process_adamw_kernel(latents, tmp_path):
    loop = Trainer(tiny_config(total_steps=1, fused_adamw=False), latents, tmp_path / "a")
    loop.run(progress=False)
    tensors, groups = optimizer_tensors(loop.optimizer)
    fused = Trainer(tiny_config(total_steps=1), latents, tmp_path / "b")
    path = tmp_path / "opt.safetensors"
    save_file(tensors, str(path), {"param_groups": groups})
    load_optimizer_tensors(fused.optimizer, path)
    assert all(g["fused"] for g in fused.optimizer.param_groups)
    fused.run(progress=False)  # the loaded (CPU, float) step counts work with the fused kernel


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_step_does_not_sync_the_host(latents, tmp_path):
    trainer = Trainer(tiny_config(total_steps=3), latents, tmp_path, device="cuda")
    batches = trainer.micro_batches(0)
    trainer.step_fn(trainer.module, batches)  # warm-up: lazy state creation may sync
    torch.cuda.set_sync_debug_mode("error")
    try:
        trainer._count(1, trainer.step_fn(trainer.module, batches, step=1))
    finally:
        torch.cuda.set_sync_debug_mode("default")
