"""Semantic-First Diffusion (SFD).

Pan et al., "Semantics Lead the Way: Harmonizing Semantic and Texture Modeling with Asynchronous
Latent Diffusion", CVPR 2026 (arXiv 2512.04926).
"""

__version__ = "0.1.0"

from sfd.api import LoadedModel, load_checkpoint, load_model  # noqa: E402

__all__ = ["LoadedModel", "__version__", "load_checkpoint", "load_model"]
