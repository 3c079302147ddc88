"""Configuration: frozen dataclasses, named presets and typed ``key=value`` overrides.

- :mod:`~sfd.config.sections`: the run config (:class:`Config` and its sections);
- :mod:`~sfd.config.presets`: named presets, a table (docs/METHOD.md §2.5);
- :mod:`~sfd.config.overrides`: ``--set`` overrides and config files, typed by
  :mod:`~sfd.config.typed`;
- :mod:`~sfd.config.autoencoder_training`: the autoencoder trainers' configs.

The bottom layer: imports nothing of sfd but :mod:`sfd.errors`.
"""

from sfd.config.autoencoder_training import COS_AXES, SemVAETrainConfig, TextureVAETrainConfig
from sfd.config.overrides import apply_overrides, load_config_file
from sfd.config.presets import PRESETS, preset
from sfd.config.sections import (
    Config,
    FlowConfig,
    LatentConfig,
    ModelConfig,
    SampleConfig,
    TrainConfig,
    progress_table_problem,
)
from sfd.config.typed import parse_value

__all__ = [
    "COS_AXES",
    "PRESETS",
    "Config",
    "FlowConfig",
    "LatentConfig",
    "ModelConfig",
    "SampleConfig",
    "SemVAETrainConfig",
    "TextureVAETrainConfig",
    "TrainConfig",
    "apply_overrides",
    "load_config_file",
    "parse_value",
    "preset",
    "progress_table_problem",
]
