"""``SFDTransformer2DModel``: sfd's LightningDiT with dual timesteps as a diffusers model.

A thin wrapper, not a copy: the network is :class:`LightningDiT` (``lightningdit.py``, held as
``.dit``), so a diffusers export computes exactly what ``sfd sample`` computes. diffusers'
``ModelMixin`` (save/load in safetensors, dtype and device helpers) and ``ConfigMixin``
(``config.json`` from the constructor's arguments) supply the hub format; the conventions
(``sample_size``, ``in_channels``, ``forward(...) -> Transformer2DModelOutput``) follow diffusers'
``DiTTransformer2DModel`` (diffusers/models/transformers/dit_transformer_2d.py), read, not copied.

The latent statistics (per-channel mean and std of the composite latent, docs/METHOD.md §2.4) travel
in the config, as they travel in an sfd checkpoint's metadata: the model is trained on
normalised latents and is meaningless without them.

This file is written verbatim into an export's ``transformer/`` folder beside the files it
imports (``sfd.ecosystem.remote``): it imports nothing of sfd by name.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.modeling_utils import ModelMixin

from .composite import LatentLayout, LatentStats
from .layers import Block  # noqa: F401  (diffusers copies only what a remote module imports)
from .lightningdit import LightningDiT


class SFDTransformer2DModel(ModelMixin, ConfigMixin):
    """LightningDiT velocity model: ``forward(sample, t_tex, t_sem, class_labels)``.

    ``sample`` is the normalised composite latent (B, C_z + C_s, H, W), texture channels first;
    times are in [0, 1] (0 = noise, 1 = data); ``class_labels`` index ``num_classes`` classes and
    ``num_classes`` itself is the null (unconditional) class.
    """

    _supports_gradient_checkpointing = False

    @register_to_config
    def __init__(
        self,
        sample_size: int = 16,
        tex_channels: int = 32,
        sem_channels: int = 16,
        depth: int = 12,
        width: int = 384,
        num_heads: int = 6,
        mlp_ratio: float = 4.0,
        patch_size: int = 1,
        num_classes: int = 1000,
        class_dropout_prob: float = 0.1,
        dual_timestep: bool = True,
        use_qknorm: bool = True,
        use_swiglu: bool = True,
        use_rope: bool = True,
        use_rmsnorm: bool = True,
        repa_depth: int = 2,
        repa_projector_dim: int = 2048,
        repa_dim: int = 768,
        latent_mean: list[float] | None = None,
        latent_std: list[float] | None = None,
    ) -> None:
        model = {
            k: v
            for k, v in locals().items()
            if k not in ("self", "__class__", "sample_size", "latent_mean", "latent_std")
        }
        super().__init__()
        self.dit = LightningDiT(latent_size=sample_size, **model)
        channels = tex_channels + sem_channels
        for name, value in (("latent_mean", latent_mean), ("latent_std", latent_std)):
            if value is not None and len(value) != channels:
                raise ValueError(f"{name} needs {channels} values (one per channel)")

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """diffusers' loader, strict: every stored weight must fit a parameter of this code and
        every parameter must be stored (diffusers only warns, then samples with random weights:
        a silent wrong image when the module files and the weights disagree)."""
        want_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(*args, output_loading_info=True, **kwargs)
        bad = {k: info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
        bad = {k: v for k, v in bad.items() if v}
        if bad:
            found = "; ".join(f"{k}: {', '.join(map(str, v[:3]))}" for k, v in bad.items())
            raise ValueError(
                f"the weights in {args[0] if args else kwargs} do not fit {cls.__name__}'s code "
                f"({found}): the module files were edited, or come from another sfd version"
            )
        return (model, info) if want_info else model

    @property
    def in_channels(self) -> int:
        return self.dit.channels

    @property
    def null_class(self) -> int:
        return self.dit.null_class

    @property
    def layout(self) -> LatentLayout:
        return LatentLayout(self.config.tex_channels, self.config.sem_channels)

    @property
    def latent_stats(self) -> LatentStats:
        """The statistics the model was trained with (identity when the config has none)."""
        if self.config.latent_mean is None or self.config.latent_std is None:
            return LatentStats.identity(self.in_channels)
        return LatentStats.from_dict(
            {"mean": self.config.latent_mean, "std": self.config.latent_std}
        )

    def forward(
        self,
        sample: torch.Tensor,
        t_tex: torch.Tensor | float,
        t_sem: torch.Tensor | float,
        class_labels: torch.Tensor,
        return_dict: bool = True,
    ) -> Transformer2DModelOutput | tuple[torch.Tensor]:
        out = self.dit(sample, t_tex=t_tex, t_sem=t_sem, y=class_labels)
        return Transformer2DModelOutput(sample=out) if return_dict else (out,)
