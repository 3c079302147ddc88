"""Training logs: JSON lines (``RUN/log.jsonl``, the source of truth), a tracker mirroring them
(``train.logger``: TensorBoard in ``RUN/tb``, wandb, none; sfd.training.loggers) and ``logging``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from sfd.data.tensor_files import atomic_write_bytes
from sfd.errors import write_failed

log = logging.getLogger("sfd.train")


class MetricLog:
    """Appends one JSON object per logged step; on resume drops entries past the resume step."""

    def __init__(self, run_dir: Path, resume_step: int, tracker=None) -> None:
        self.path = Path(run_dir) / "log.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            kept = [
                line
                for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= resume_step
            ]
            atomic_write_bytes(self.path, "".join(f"{x}\n" for x in kept).encode())
        self.tracker = tracker  # a sfd.training.loggers.Tracker or None

    def write(self, step: int, metrics: dict[str, float]) -> None:
        record = {"step": step, **metrics}
        try:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as err:  # a resumed run rewrites the log up to its checkpoint
            kept = "the checkpoints are intact; a rerun resumes from the last one"
            raise write_failed(self.path, err, kept) from err
        if self.tracker is not None:
            self.tracker.log(step, metrics)
        log.info("step %d %s", step, " ".join(f"{k}={v:.4g}" for k, v in metrics.items()))

    def close(self) -> None:
        if self.tracker is not None:
            self.tracker.close()


def read_log(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "log.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
