"""sfd where users already work: a diffusers model, scheduler and pipeline, exports that load
without sfd (remote code) and a local web app (docs/ECOSYSTEM.md). Importing this package
imports diffusers."""

from sfd.ecosystem.convert import load_export
from sfd.ecosystem.remote.pipeline_sfd import SFDPipeline, image_generators
from sfd.ecosystem.remote.scheduler_sfd import SFDScheduler
from sfd.ecosystem.remote.transformer_sfd import SFDTransformer2DModel

__all__ = [
    "SFDPipeline",
    "SFDScheduler",
    "SFDTransformer2DModel",
    "image_generators",
    "load_export",
]
