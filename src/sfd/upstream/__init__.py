"""Import checkpoints of the official SFD release (a LightningDiT fork, MIT): its configs
(:mod:`sfd.upstream.config`) and its weights and latent statistics
(:mod:`sfd.upstream.release_checkpoint`). The release's SemVAE:
:mod:`sfd.latents.upstream_semvae`."""

from sfd.upstream.config import (
    config_from_kwargs,
    config_from_yaml,
    interval_for_mode,
    parse_model_type,
    read_inference_config,
    read_upstream_config,
    sample_from_yaml,
)
from sfd.upstream.release_checkpoint import (
    import_upstream,
    read_latent_stats,
    read_upstream_state_dict,
)

__all__ = [
    "config_from_kwargs",
    "config_from_yaml",
    "import_upstream",
    "interval_for_mode",
    "parse_model_type",
    "read_inference_config",
    "read_latent_stats",
    "read_upstream_config",
    "read_upstream_state_dict",
    "sample_from_yaml",
]
