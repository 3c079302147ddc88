"""Numerical faults, injected: a NaN step is skipped; a loss spike is detected, skipped, and
(with train.spike_rollback) rolled back to the last checkpoint with its batches skipped."""

import dataclasses
import json

import pytest
import torch

from sfd.errors import DivergedError
from sfd.training import loop
from sfd.training.logs import read_log
from sfd.training.step import TrainStep
from tests.helpers import tiny_config, write_synthetic_latents


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_synthetic_latents(tmp_path_factory.mktemp("d"), tiny_config(), count=8)


def _inject(monkeypatch, faults: dict[int, float]):
    """Multiply the loss of (0-based) step k by faults[k], the first time step k runs."""
    real, seen = TrainStep.loss, set()

    def loss(self, module, b):
        total, parts = real(self, module, b)
        k = self.last_step  # the trainer's step (Trainer.train_step sets it)
        if k in faults and k not in seen:
            seen.add(k)
            total, parts = total * faults[k], parts * faults[k]
        return total, parts

    monkeypatch.setattr(TrainStep, "loss", loss)
    return seen


def _cfg(**kw):
    base = dict(total_steps=8, global_batch_size=4, ckpt_every=2, log_every=1, spike_window=3)
    return tiny_config(**{**base, **kw})


def _finite(run):
    w = loop.read_checkpoint(loop.list_checkpoints(run)[-1]).path / "model.safetensors"
    from safetensors.torch import load_file

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
    state = json.loads(
        __import__("sfd.errors").errors.safetensors_metadata(
            loop.list_checkpoints(run)[-1] / "optimizer.safetensors"
        )["trainer_state"]
    )
    assert state["rollbacks"] == 1 and state["skip_until"] == 6


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


def test_detection_off_by_default_reads_no_loss_per_step(data, tmp_path):
    """The default step stays sync-free: no gate; spike_factor > 0 installs the host-side one."""
    assert loop.Trainer(_cfg(), data, tmp_path / "a").step_fn.gate is None
    assert loop.Trainer(_cfg(spike_factor=5.0), data, tmp_path / "b").step_fn.gate is not None


def test_skipped_count_survives_resume(data, tmp_path, monkeypatch):
    _inject(monkeypatch, {1: float("nan")})
    run = tmp_path / "r"
    assert loop.train(_cfg(total_steps=4), data, run, progress=False).skipped_steps == 1
    res = loop.train(_cfg(total_steps=8), data, run, progress=False)
    assert res.step == 8 and res.skipped_steps == 1
