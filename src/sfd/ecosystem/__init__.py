"""sfd where users already work: a diffusers model, scheduler and pipeline, hub-ready exports and
a local web app (docs/ECOSYSTEM.md). Importing this package imports diffusers."""

from sfd.ecosystem.pipeline import SFDPipeline, image_generators
from sfd.ecosystem.scheduler import SFDScheduler
from sfd.ecosystem.transformer import SFDTransformer2DModel

__all__ = ["SFDPipeline", "SFDScheduler", "SFDTransformer2DModel", "image_generators"]
