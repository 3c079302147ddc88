"""The SFD denoiser (LightningDiT with dual timesteps and a REPA projector)."""

from sfd.model.lightningdit import LightningDiT, count_parameters

__all__ = ["LightningDiT", "count_parameters"]
