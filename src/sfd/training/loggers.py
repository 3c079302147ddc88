"""Experiment trackers beside the JSONL log (``train.logger``: tensorboard | wandb | none).

``RUN/log.jsonl`` (:class:`sfd.training.logs.MetricLog`) is the source of truth: it is written
first and resumes with the run; a tracker only mirrors the same scalars as ``train/<name>``.
TensorBoard writes ``RUN/tb`` (torch's ``SummaryWriter``). Weights & Biases (wandb.ai/docs:
``wandb.init``, ``run.log``, ``WANDB_MODE=offline``) logs to ``RUN/wandb`` with the run's
config; the run id is derived from the run directory, so a resumed run continues the same wandb
run (``resume="allow"``). wandb is optional: ``pip install 'sfd[wandb]'``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Protocol

from sfd.config import Config
from sfd.errors import install_hint

LOGGERS = ("tensorboard", "wandb", "none")


class Tracker(Protocol):
    def log(self, step: int, metrics: dict[str, float]) -> None: ...

    def close(self) -> None: ...


class TensorBoardTracker:
    def __init__(self, run_dir: Path, resume_step: int) -> None:
        # lazy: tensorboard is optional and slow to import (runs with
        # train.logger=none never load it)
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(Path(run_dir) / "tb"), purge_step=resume_step + 1)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(f"train/{key}", value, step)

    def close(self) -> None:
        self.writer.close()


class WandbTracker:
    def __init__(self, run_dir: Path, config: Config) -> None:
        try:
            import wandb  # here, not at the top: an optional dependency (train.logger=wandb)
        except ImportError:
            raise ValueError(
                f"train.logger=wandb needs wandb: {install_hint('wandb')}; "
                "or set train.logger=tensorboard / none"
            ) from None
        run_dir = Path(run_dir).resolve()
        (run_dir / "wandb").mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project="sfd",
            name=run_dir.name,
            id=wandb_run_id(run_dir),
            dir=str(run_dir),
            config=config.to_dict(),
            resume="allow",
        )

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self.run.log({f"train/{k}": v for k, v in metrics.items()}, step=step)

    def close(self) -> None:
        self.run.finish()


def wandb_run_id(run_dir: Path) -> str:
    """A stable id per run directory (a resumed run continues its wandb run)."""
    return "sfd-" + hashlib.sha1(str(Path(run_dir).resolve()).encode()).hexdigest()[:12]


def make_tracker(kind: str, run_dir: Path, config: Config, resume_step: int) -> Tracker | None:
    """The tracker ``train.logger`` names (None for ``none``)."""
    if kind == "tensorboard":
        return TensorBoardTracker(run_dir, resume_step)
    if kind == "wandb":
        return WandbTracker(run_dir, config)
    if kind == "none":
        return None
    raise ValueError(f"train.logger must be one of {LOGGERS}; got {kind!r}")
