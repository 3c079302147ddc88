"""LightningDiT with dual timestep conditioning and a REPA projector (docs/METHOD.md §2.5-2.8).

SFD (Pan et al. 2026) conditions one backbone on two times: ``t_sem`` for the semantic channels
and ``t_tex`` for the texture channels. Two half-width sinusoidal embedders are concatenated as
``[emb(t_sem), emb(t_tex)]`` and added to the label embedding. One output layer predicts the
velocity of all channels. REPA (Yu et al. 2025) projects the tokens after a chosen block to the
frozen encoder's feature space during training.

The module is a pure function of tensors: no RNG, devices, prints or label dropout inside. It is
built from plain keyword arguments (``LightningDiT.from_configs`` takes sfd's config sections) and
imports nothing of sfd but its sibling ``layers``, relatively: a diffusers export carries this
file and ``layers.py`` verbatim (docs/ECOSYSTEM.md).
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .layers import (
    Block,
    FinalLayer,
    LabelEmbedder,
    Rope2D,
    TimestepEmbedder,
    sincos_pos_embed_2d,
)


class PatchEmbed(nn.Module):
    """Conv patchify (kernel = stride = patch) to row-major tokens (B, T, D)."""

    def __init__(self, patch_size: int, in_channels: int, width: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, width, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


def repa_projector(width: int, hidden: int, dim: int) -> nn.Module | None:
    """The REPA head: tokens (width) -> MLP (hidden, SiLU) -> the encoder's ``dim``; None if 0."""
    if dim <= 0:
        return None
    return nn.Sequential(
        nn.Linear(width, hidden),
        nn.SiLU(),
        nn.Linear(hidden, hidden),
        nn.SiLU(),
        nn.Linear(hidden, dim),
    )


class LightningDiT(nn.Module):
    """The SFD denoiser: ``model(x, t_tex=..., t_sem=..., y=...)`` -> velocity (B, C, H, W)."""

    def __init__(
        self,
        *,
        latent_size: int,
        tex_channels: int,
        sem_channels: int,
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
    ) -> None:
        args = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        super().__init__()
        if latent_size % patch_size:
            raise ValueError(
                f"latent.size={latent_size} must be divisible by model.patch_size={patch_size}"
            )
        self.config = SimpleNamespace(**args)  # every argument, by name
        model = self.config
        self.channels = tex_channels + sem_channels
        self.patch_size = patch_size
        self.grid = latent_size // patch_size
        self.gradient_checkpointing = False

        self.x_embedder = PatchEmbed(model.patch_size, self.channels, width)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid**2, width), requires_grad=False)
        if model.dual_timestep:
            self.t_embedder_sem = TimestepEmbedder(width // 2)
            self.t_embedder_tex = TimestepEmbedder(width // 2)
        else:
            self.t_embedder = TimestepEmbedder(width)
        self.y_embedder = LabelEmbedder(model.num_classes, width, model.class_dropout_prob > 0)
        self.feat_rope = Rope2D(width // model.num_heads, self.grid) if model.use_rope else None
        self.blocks = nn.ModuleList(
            Block(
                width,
                model.num_heads,
                model.mlp_ratio,
                qk_norm=model.use_qknorm,
                swiglu=model.use_swiglu,
                rms=model.use_rmsnorm,
            )
            for _ in range(model.depth)
        )
        self.final_layer = FinalLayer(width, model.patch_size, self.channels, model.use_rmsnorm)
        self.repa_projector = repa_projector(width, repa_projector_dim, repa_dim)
        self.initialize_weights()

    @classmethod
    def from_configs(cls, model, latent) -> LightningDiT:
        """From sfd's ``ModelConfig`` and ``LatentConfig`` sections (dataclasses)."""
        return cls(
            **dataclasses.asdict(model),
            latent_size=latent.size,
            tex_channels=latent.tex_channels,
            sem_channels=latent.sem_channels,
        )

    def arguments(self) -> dict:
        """The constructor's keyword arguments (``LightningDiT(**m.arguments())`` rebuilds it)."""
        return dict(vars(self.config))

    @property
    def null_class(self) -> int:
        """Label index of the unconditional ("null") class."""
        return self.config.num_classes

    def initialize_weights(self) -> None:
        """DiT initialisation: Xavier linears, zero adaLN modulation and output (adaLN-Zero)."""

        def xavier(module: nn.Module) -> None:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

        self.apply(xavier)
        with torch.no_grad():
            self.pos_embed.copy_(sincos_pos_embed_2d(self.config.width, self.grid))
        w = self.x_embedder.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.x_embedder.proj.bias)
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        for emb in self._time_embedders():
            nn.init.normal_(emb.mlp[0].weight, std=0.02)
            nn.init.normal_(emb.mlp[2].weight, std=0.02)
        for block in self.blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        for layer in (self.final_layer.adaLN_modulation[-1], self.final_layer.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def _time_embedders(self) -> list[TimestepEmbedder]:
        if self.config.dual_timestep:
            return [self.t_embedder_sem, self.t_embedder_tex]
        return [self.t_embedder]

    def condition(self, t_tex: torch.Tensor, t_sem: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """adaLN conditioning c = [emb(t_sem), emb(t_tex)] + emb(y), (B, width)."""
        if self.config.dual_timestep:
            t_emb = torch.cat([self.t_embedder_sem(t_sem), self.t_embedder_tex(t_tex)], dim=-1)
        else:
            t_emb = self.t_embedder(t_tex)
        return t_emb + self.y_embedder(y)

    def forward(
        self,
        x: torch.Tensor,
        *,
        t_tex: torch.Tensor,
        t_sem: torch.Tensor,
        y: torch.Tensor,
        return_repa: bool = False,
    ):
        """Velocity of the composite latent.

        Args:
            x: (B, C_z + C_s, H, W) noisy composite latent, texture channels first.
            t_tex, t_sem: (B,) or scalar times in [0, 1] (0 = noise, 1 = data).
            y: (B,) int64 labels; ``num_classes`` is the null class.
            return_repa: also return the REPA projection (B, T, repa_dim) of the tokens after
                block ``repa_depth`` (1-indexed).
        """
        b = x.shape[0]
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(f"x must be (B, {self.channels}, H, W); got {tuple(x.shape)}")
        t_tex = torch.as_tensor(t_tex, device=x.device, dtype=torch.float32).expand(b)
        t_sem = torch.as_tensor(t_sem, device=x.device, dtype=torch.float32).expand(b)
        tokens = self.x_embedder(x) + self.pos_embed  # (B, T, D)
        c = self.condition(t_tex, t_sem, y)
        repa = None
        for i, block in enumerate(self.blocks):
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                tokens = checkpoint(block, tokens, c, self.feat_rope, use_reentrant=False)
            else:
                tokens = block(tokens, c, self.feat_rope)
            if return_repa and i + 1 == self.config.repa_depth:
                if self.repa_projector is None:
                    raise ValueError(
                        "return_repa=True but the model has no REPA projector (model.repa_dim = 0)"
                    )
                repa = self.repa_projector(tokens)
        out = self.unpatchify(self.final_layer(tokens, c))
        return (out, repa) if return_repa else out

    def unpatchify(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T, p*p*C) -> (B, C, H, W)."""
        b, p, g, c = tokens.shape[0], self.patch_size, self.grid, self.channels
        x = tokens.reshape(b, g, g, p, p, c)
        return torch.einsum("nhwpqc->nchpwq", x).reshape(b, c, g * p, g * p)


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
