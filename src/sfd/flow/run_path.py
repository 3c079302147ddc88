"""The progress path a run's flow config names (docs/SCHEDULE.md): its learned table
(``flow.schedule``), else SFD's offset for ``flow.delta_t``. Kept apart from
:mod:`sfd.flow.progress`, whose maths a diffusers export carries without ``sfd.config``."""

from __future__ import annotations

import functools

import torch

from sfd.config import FlowConfig
from sfd.flow.progress import ProgressPath, offset_path, table_path


@functools.lru_cache(maxsize=16)
def _cached_path(delta_t: float, schedule: tuple[float, ...]) -> ProgressPath:
    if not schedule:
        return offset_path(delta_t)
    return table_path(torch.tensor(schedule, dtype=torch.float64).reshape(2, -1))


def path_of(flow: FlowConfig) -> ProgressPath:
    """The path a run's flow config names: its learned table, else SFD's offset Δt."""
    return _cached_path(float(flow.delta_t), tuple(flow.schedule))
