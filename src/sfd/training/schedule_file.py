"""A learned schedule on disk (docs/SCHEDULE.md, docs/FORMATS.md): one JSON file.

::

    {"format": "sfd-schedule/1",
     "progress": {"tex": [M + 1 numbers], "sem": [M + 1 numbers]},   # at t_j = j / M
     "lead_at_middle": 0.04,      # the Δt-equivalent (sfd.flow.progress.lead_at_middle)
     "probe": {...}}              # how it was learned: settings, data, seconds, history

Each row rises from 0 to 1 and never decreases. A run configured with ``flow.schedule_file``
copies the table into ``flow.schedule`` (texture row, then semantic row), which its config,
checkpoints and exports carry; the file is not needed again.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from sfd.config import Config
from sfd.data.tensor_files import atomic_write_json
from sfd.errors import BadInputError, MismatchError, MissingInputError
from sfd.flow.progress import check_table, lead_at_middle, table_path

FORMAT = "sfd-schedule/1"


def schedule_document(table: torch.Tensor, probe: dict | None = None) -> dict:
    """The JSON document of a checked progress table (2, M + 1)."""
    table = check_table(table).double()
    return {
        "format": FORMAT,
        "progress": {"tex": table[0].tolist(), "sem": table[1].tolist()},
        "lead_at_middle": lead_at_middle(table_path(table)),
        "probe": probe or {},
    }


def save_schedule(path: str | Path, table: torch.Tensor, probe: dict | None = None) -> Path:
    """Write the schedule file atomically; an existing file is never overwritten."""
    path = Path(path)
    if path.exists():
        raise BadInputError(f"{path} exists; choose another --out or remove it first")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, schedule_document(table, probe))
    return path


def load_schedule(path: str | Path) -> torch.Tensor:
    """The progress table (2, M + 1) float64 of a schedule file, or one line naming the file
    and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(
            f"schedule file {path} does not exist (make one with `sfd learn-schedule`)"
        )
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BadInputError(f"schedule file {path} is not JSON ({err})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise BadInputError(f"schedule file {path} has format {got!r}; expected {FORMAT!r}")
    progress = doc.get("progress")
    rows = [progress.get(k) for k in ("tex", "sem")] if isinstance(progress, dict) else None
    if not rows or not all(isinstance(r, list) for r in rows) or len(rows[0]) != len(rows[1]):
        raise BadInputError(
            f"schedule file {path}: progress must hold two lists 'tex' and 'sem' of the same "
            f"length (M + 1 values each)"
        )
    try:
        return check_table(torch.tensor(rows, dtype=torch.float64)).double()
    except (ValueError, TypeError) as err:
        raise BadInputError(f"schedule file {path}: {err}") from None


def with_schedule_file(cfg: Config) -> Config:
    """``cfg`` with ``flow.schedule`` filled from ``flow.schedule_file`` (if that is set); a
    table already there that differs from the file's is an error naming both. A run whose config
    already holds the table (a resumed run, a checkpoint) does not need the file again."""
    flow = cfg.flow
    if not flow.schedule_file or (flow.schedule and not Path(flow.schedule_file).exists()):
        return cfg
    table = load_schedule(flow.schedule_file)
    values = tuple(float(v) for v in table.flatten().tolist())
    if flow.schedule and flow.schedule != values:
        raise MismatchError(
            f"flow.schedule holds another table than flow.schedule_file {flow.schedule_file}; "
            f"set only one of them"
        )
    return dataclasses.replace(cfg, flow=dataclasses.replace(flow, schedule=values))
