"""Numerical faults, injected: a NaN step is skipped; a loss spike is detected, skipped, and
(with train.spike_rollback) rolled back to the last checkpoint with its batches skipped."""

import dataclasses
import json
import math

import pytest
import torch
from safetensors.torch import load_file

from sfd.data.tensor_files import safetensors_metadata
from sfd.errors import DivergedError
from sfd.training import loop
from sfd.training.checkpoint import list_checkpoints, optimizer_tensors, read_checkpoint
from sfd.training.logs import read_log
from sfd.training.step import TrainStep
from tests.helpers import tiny_config, write_synthetic_latents


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_synthetic_latents(tmp_path_factory.mktemp("d"), tiny_config(), count=8)


def _inject(monkeypatch, faults: dict[int, float]):
    """Multiply the loss of (0-based) step k by faults[k], the first time step k runs."""
    real_call, real_loss, seen, factor = TrainStep.__call__, TrainStep.loss, set(), [1.0]

    def call(self, module, batches, *, step=-1, spike_limit=None):
        first = step in faults and step not in seen
        factor[0] = faults[step] if first else 1.0
        seen.update([step] if first else [])
        return real_call(self, module, batches, step=step, spike_limit=spike_limit)

    def loss(self, module, b):
        total, parts = real_loss(self, module, b)
        if factor[0] != 1.0:
            total, parts = total * factor[0], parts * factor[0]
        return total, parts

    monkeypatch.setattr(TrainStep, "__call__", call)
    monkeypatch.setattr(TrainStep, "loss", loss)
    return seen


def _cfg(**kw):
    base = dict(total_steps=8, global_batch_size=4, ckpt_every=2, log_every=1, spike_window=3)
    return tiny_config(**{**base, **kw})


def _finite(run):
    w = read_checkpoint(list_checkpoints(run)[-1]).path / "model.safetensors"
    return all(torch.isfinite(v).all() for v in load_file(str(w)).values())


def test_nan_step_is_skipped(data, tmp_path, monkeypatch):
    _inject(monkeypatch, {3: float("nan")})
    res = loop.train(_cfg(), data, tmp_path / "r", progress=False)
    assert res.step == 8 and res.skipped_steps == 1 and _finite(tmp_path / "r")


def test_spike_skipped_without_rollback(data, tmp_path, monkeypatch):
    _inject(monkeypatch, {5: 1000.0})
    trainer_spikes = []
    res = loop.train(_cfg(spike_factor=5.0), data, tmp_path / "r", progress=False)
    trainer_spikes = [h["spikes"] for h in res.history]
    assert res.step == 8 and trainer_spikes[-1] == 1 and _finite(tmp_path / "r")
    assert [h["rollbacks"] for h in res.history][-1] == 0


def test_spike_rolls_back_to_last_checkpoint(data, tmp_path, monkeypatch):
    seen = _inject(monkeypatch, {5: 1000.0})
    run = tmp_path / "r"
    res = loop.train(_cfg(spike_factor=5.0, spike_rollback=True), data, run, progress=False)
    assert seen == {5} and res.step == 8 and _finite(run)
    assert res.history[-1]["spikes"] == 1 and res.history[-1]["rollbacks"] == 1
    steps = [r["step"] for r in read_log(run)]
    assert steps == sorted(set(steps)), "log.jsonl has duplicated or unordered steps"
    # steps 5 and 6 (the checkpoint at 4 .. the spike) were skipped: no log lines for them
    assert steps == [1, 2, 3, 4, 5, 7, 8] or 6 not in steps
    optimizer = list_checkpoints(run)[-1] / "optimizer.safetensors"
    state = json.loads(safetensors_metadata(optimizer, "optimizer state")["trainer_state"])
    assert state["rollbacks"] == 1 and state["skip_until"] == 6


def _tensors(trainer) -> dict[str, torch.Tensor]:
    """Model, EMA and optimizer (moments, step counts) of a trainer, cloned."""
    parts = {"model": trainer.model.state_dict(), "ema": trainer.ema.state_dict()}
    parts["optimizer"] = optimizer_tensors(trainer.optimizer)[0]
    return {f"{n}.{k}": v.clone() for n, state in parts.items() for k, v in state.items()}


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_rollback_restores_the_exact_state_of_the_last_checkpoint(
    data, tmp_path, monkeypatch, parallel
):
    """Weights, EMA, optimizer and the loop's own state (its loss window) after a rollback are
    those the checkpoint saved, bit for bit; the counts go on. Full-state and sharded (FSDP)
    checkpoints alike."""
    _inject(monkeypatch, {5: 1000.0})
    saved, restored = {}, []
    save, rollback = loop.Trainer.save, loop.Trainer._rollback

    def saving(self):
        save(self)
        saved[self.step] = _tensors(self), self.state()

    def rolling_back(self, spike_step):
        before = list(self.loss_window)
        rollback(self, spike_step)
        restored.append((self.step, _tensors(self), self.state(), before))

    monkeypatch.setattr(loop.Trainer, "save", saving)
    monkeypatch.setattr(loop.Trainer, "_rollback", rolling_back)
    cfg = _cfg(spike_factor=5.0, spike_rollback=True)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, parallel=parallel))
    loop.train(cfg, data, tmp_path / "r", progress=False)
    [(step, tensors, state, window_at_spike)] = restored
    want_tensors, want_state = saved[4]
    assert step == 4 and tensors.keys() == want_tensors.keys()
    assert all(torch.equal(tensors[k], want_tensors[k]) for k in tensors)
    assert window_at_spike != want_state["loss_window"]  # step 4's loss went in since
    assert state == {**want_state, "spikes": 1, "rollbacks": 1, "skip_until": 6}


def test_too_many_rollbacks_is_divergence(data, tmp_path, monkeypatch):
    _inject(monkeypatch, {5: 1000.0})
    cfg = _cfg(spike_factor=5.0, spike_rollback=True, max_rollbacks=0)
    with pytest.raises(DivergedError, match="loss spike at step 6"):
        loop.train(cfg, data, tmp_path / "r", progress=False)


def test_spike_settings_may_change_on_resume(data, tmp_path):
    loop.train(_cfg(total_steps=2), data, tmp_path / "r", progress=False)
    cfg = _cfg(total_steps=4, spike_factor=3.0, spike_rollback=True)
    assert loop.train(cfg, data, tmp_path / "r", progress=False).step == 4
    assert dataclasses.asdict(cfg.train)["spike_factor"] == 3.0


def test_detection_off_by_default_reads_no_loss_per_step(data, tmp_path, monkeypatch):
    """The default step stays sync-free: no spike limit, so the step reads no loss on the host;
    spike_factor > 0 passes one to every step (infinite until the window is full)."""
    real, limits = TrainStep.__call__, []

    def call(self, module, batches, **kw):
        limits.append(kw.get("spike_limit"))
        return real(self, module, batches, **kw)

    monkeypatch.setattr(TrainStep, "__call__", call)
    loop.train(_cfg(total_steps=4), data, tmp_path / "a", progress=False)
    assert limits == [None] * 4
    limits.clear()
    loop.train(_cfg(total_steps=5, spike_factor=5.0), data, tmp_path / "b", progress=False)
    assert limits[:3] == [math.inf] * 3 and all(0 < x < math.inf for x in limits[3:])
    assert len(limits) == 5


def test_skipped_count_survives_resume(data, tmp_path, monkeypatch):
    _inject(monkeypatch, {1: float("nan")})
    run = tmp_path / "r"
    assert loop.train(_cfg(total_steps=4), data, run, progress=False).skipped_steps == 1
    res = loop.train(_cfg(total_steps=8), data, run, progress=False)
    assert res.step == 8 and res.skipped_steps == 1
