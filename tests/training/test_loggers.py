"""``train.logger``: wandb (offline mode) and none mirror the JSONL log, which stays the truth."""

from __future__ import annotations

import pytest

from sfd.config import apply_overrides
from sfd.errors import ConfigError
from sfd.training.logs import read_log
from sfd.training.loop import Trainer
from tests.helpers import tiny_config, write_synthetic_latents


@pytest.fixture(scope="module")
def latents(tmp_path_factory):
    d = tmp_path_factory.mktemp("latents")
    return write_synthetic_latents(d, tiny_config(), count=16, shard_size=8)


def train_with(logger: str, latents, run_dir, steps: int = 4):
    cfg = tiny_config(total_steps=steps, global_batch_size=4, log_every=2, logger=logger)
    Trainer(cfg, latents, run_dir).run(progress=False)
    return read_log(run_dir)


def test_wandb_offline_logs_what_the_jsonl_log_holds(latents, tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb", reason="the [dev] extra installs wandb")
    from wandb.sdk.wandb_run import Run

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    logged, configs = [], []
    real_log = Run.log

    def spy(self, data, step=None, **kwargs):  # record, then log for real (offline)
        logged.append((step, dict(data)))
        configs.append(dict(self.config))
        return real_log(self, data, step=step, **kwargs)

    monkeypatch.setattr(Run, "log", spy)
    rows = train_with("wandb", latents, tmp_path / "run")
    assert [r["step"] for r in rows] == [2, 4]
    assert [step for step, _ in logged] == [2, 4]
    for (_, data), row in zip(logged, rows, strict=True):
        assert data == {f"train/{k}": v for k, v in row.items() if k != "step"}
    assert configs[0]["train"]["logger"] == "wandb" and configs[0]["model"]["width"] == 64
    runs = list((tmp_path / "run/wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1 and runs[0].stat().st_size > 0  # wandb sync can upload it later
    assert not (tmp_path / "run/tb").exists()
    assert wandb.run is None  # the run was finished


def test_logger_none_writes_only_the_jsonl_log(latents, tmp_path):
    rows = train_with("none", latents, tmp_path / "run", steps=2)
    assert [r["step"] for r in rows] == [2]
    assert not (tmp_path / "run/tb").exists() and not (tmp_path / "run/wandb").exists()


def test_unknown_logger_is_a_config_error():
    with pytest.raises((ConfigError, ValueError), match="train.logger"):
        apply_overrides(tiny_config(), ["train.logger=mlflow"])
