"""Semantic VAE (docs/METHOD.md §2.2; Pan et al. 2026, "SemVAE"): compresses frozen-encoder
features ``f(x)`` (C_in channels per token) to the semantic latent ``s`` (C_s channels) on the
same grid, token by token through a transformer.

Encoder: Linear C_in -> W, N pre-LN blocks (multi-head self-attention and a GELU MLP of
``mlp_ratio * W``, each a residual branch after a LayerNorm), LayerNorm, Linear W -> 2 C_s
(mean and log-variance). The decoder mirrors it: Linear C_s -> W, N blocks, LayerNorm,
Linear W -> C_in. The release uses W = 768, N = 4, 6 heads, C_s = 16 (about 58M parameters)
and no positional embedding (the features carry position); a learned or fixed 2D sin-cos one
is optional. Randomness enters as an argument: ``forward(features, noise)``. LayerNorm eps is
``layer_norm_eps``, by default the release's 1e-5 (its ``nn.LayerNorm`` modules keep PyTorch's
default; fixture README "Blocks": "LayerNorm eps is 1e-5"): a choice, not a bug, so matched. sfd
used 1e-6 before the key existed: a saved directory without it loads with
:data:`LEGACY_LAYER_NORM_EPS`, exactly as it was trained.

Loss (:func:`semvae_loss`): ``MSE(f_hat, f) + (1 - cos(f_hat, f)) + 1e-7 KL``. By default
(``cos_axis="channel"``) the cosine is taken PER TOKEN over the feature dimension and averaged
over tokens. The release computes it over the token axis instead, one cosine per (sample,
channel) across positions (``F.cosine_similarity``'s default ``dim=1`` on its (B, L, C)
tokens), by mistake (docs/METHOD.md §2.2); ``cos_axis="token"`` reproduces it for parity. The KL
to N(0, I) is summed over the latent elements of a sample and averaged over the batch (the LDM
convention the 1e-7 weight was set with). Log-variances are clamped to [-30, 20] as in LDM.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from sfd.config import COS_AXES
from sfd.data.tensor_files import atomic_save_safetensors, atomic_write_json

FORMAT = "sfd-semvae"
WEIGHTS_FILE = "semvae.safetensors"
CONFIG_FILE = "semvae.json"
RELEASE_LAYER_NORM_EPS = 1e-5  # nn.LayerNorm's default, which the release's modules keep
LEGACY_LAYER_NORM_EPS = 1e-6  # sfd's before ``layer_norm_eps`` was saved (see load_semvae)


@dataclass(frozen=True)
class SemVAEConfig:
    in_dim: int = 768  # C_in, channels of the encoder features
    latent_channels: int = 16  # C_s
    width: int = 768
    depth: int = 4
    num_heads: int = 6
    mlp_ratio: float = 4.0
    pos_embed: Literal["none", "learned", "sincos"] = "none"
    grid: int = 16  # h = w; used only by a positional embedding
    layer_norm_eps: float = RELEASE_LAYER_NORM_EPS  # the release's (module docstring)

    def __post_init__(self) -> None:
        for name in ("in_dim", "latent_channels", "width", "depth", "num_heads", "grid"):
            if getattr(self, name) < 1:
                raise ValueError(f"semvae.{name} must be >= 1; got {getattr(self, name)}")
        if self.width % self.num_heads:
            raise ValueError(
                f"semvae.width={self.width} must be a multiple of semvae.num_heads={self.num_heads}"
            )
        if self.pos_embed not in ("none", "learned", "sincos"):
            raise ValueError(
                f"semvae.pos_embed must be 'none', 'learned' or 'sincos'; got {self.pos_embed!r}"
            )
        if not self.layer_norm_eps > 0:
            raise ValueError(f"semvae.layer_norm_eps must be > 0; got {self.layer_norm_eps}")
        if self.pos_embed == "sincos" and self.width % 4:
            raise ValueError(
                f"a sincos positional embedding needs semvae.width divisible by 4; got {self.width}"
            )


def sincos_pos_embed(width: int, grid: int) -> torch.Tensor:
    """Fixed 2D sin-cos embedding (MAE): (grid * grid, width), row-major tokens; the first
    half encodes the column, the second the row, each half [sin | cos]."""
    quarter = width // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    coords = torch.arange(grid, dtype=torch.float64)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")
    parts = []
    for axis in (cols, rows):
        angles = axis.reshape(-1, 1) * omega  # (L, quarter)
        parts += [angles.sin(), angles.cos()]
    return torch.cat(parts, dim=1).float()


class Block(nn.Module):
    """Pre-LN transformer block: x + Attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, width: int, num_heads: int, mlp_ratio: float, eps: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(width, eps=eps)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width, eps=eps)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).view(b, n, 3, self.num_heads, d // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, heads, N, head_dim)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TokenTransformer(nn.Module):
    """Linear d_in -> W, optional positional embedding, blocks, LayerNorm, Linear W -> d_out."""

    def __init__(self, d_in: int, d_out: int, cfg: SemVAEConfig) -> None:
        super().__init__()
        self.proj_in = nn.Linear(d_in, cfg.width)
        num_tokens = cfg.grid * cfg.grid
        if cfg.pos_embed == "learned":
            self.pos_embed = nn.Parameter(torch.randn(1, num_tokens, cfg.width) * 0.02)
        elif cfg.pos_embed == "sincos":
            self.register_buffer(
                "pos_embed", sincos_pos_embed(cfg.width, cfg.grid)[None], persistent=False
            )
        else:
            self.pos_embed = None
        self.blocks = nn.ModuleList(
            Block(cfg.width, cfg.num_heads, cfg.mlp_ratio, cfg.layer_norm_eps)
            for _ in range(cfg.depth)
        )
        self.norm = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)
        self.proj_out = nn.Linear(cfg.width, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        x = self.proj_in(x.flatten(2).transpose(1, 2))  # (B, h*w, W)
        if self.pos_embed is not None:
            grid = math.isqrt(self.pos_embed.shape[1])
            if (h, w) != (grid, grid):
                raise ValueError(
                    f"the positional embedding has {self.pos_embed.shape[1]} tokens "
                    f"({grid} x {grid}); the input has {h} x {w}"
                )
            x = x + self.pos_embed
        for block in self.blocks:
            x = block(x)
        x = self.proj_out(self.norm(x))
        return x.transpose(1, 2).reshape(b, -1, h, w)  # (B, d_out, h, w)


class SemanticVAE(nn.Module):
    """Features (B, C_in, h, w) <-> semantic latent (B, C_s, h, w); see the module docstring."""

    def __init__(self, config: SemVAEConfig) -> None:
        super().__init__()
        self.config = config
        # the encoder settings of the features it was trained on (``semvae.json``'s
        # ``encoder``; None when unknown): ``sfd.extract`` refuses features of another encoder
        self.trained_on: dict | None = None
        self.encoder = TokenTransformer(config.in_dim, 2 * config.latent_channels, config)
        self.decoder = TokenTransformer(config.latent_channels, config.in_dim, config)

    def _check(self, x: torch.Tensor, channels: int, name: str) -> None:
        if x.ndim != 4 or x.shape[1] != channels:
            raise ValueError(f"{name} must be (B, {channels}, h, w); got {tuple(x.shape)}")

    def encode(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior ``(mean, logvar)``, each (B, C_s, h, w)."""
        self._check(features, self.config.in_dim, "features")
        mean, logvar = self.encoder(features).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def posterior(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior ``(mean, std)``, each (B, C_s, h, w): what extraction stores."""
        mean, logvar = self.encode(features)
        return mean, torch.exp(0.5 * logvar)

    def decode(self, s: torch.Tensor) -> torch.Tensor:
        self._check(s, self.config.latent_channels, "semantic latent")
        return self.decoder(s)

    def forward(self, features: torch.Tensor, noise: torch.Tensor | None = None):
        """Reconstruction from ``s = mean + std * noise`` (``noise=None``: the mean).
        Returns ``(reconstruction, mean, logvar)``."""
        mean, logvar = self.encode(features)
        s = mean if noise is None else mean + torch.exp(0.5 * logvar) * noise
        return self.decode(s), mean, logvar


def gaussian_kl_per_sample(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)) summed over all but the batch axis: (B,)."""
    return 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).flatten(1).sum(1)


CosAxis = Literal["channel", "token"]


def reconstruction_cosine(
    recon: torch.Tensor, target: torch.Tensor, cos_axis: CosAxis = "channel"
) -> torch.Tensor:
    """Cosine similarity of (B, C, h, w) features: over the channels, one per token (B, h, w)
    (``"channel"``, sfd's), or over the tokens, one per channel (B, C) (``"token"``, the
    release's; module docstring)."""
    if cos_axis == "channel":
        return F.cosine_similarity(recon, target, dim=1, eps=1e-8)
    if cos_axis == "token":
        return F.cosine_similarity(recon.flatten(2), target.flatten(2), dim=2, eps=1e-8)
    raise ValueError(f"cos_axis must be one of {COS_AXES}; got {cos_axis!r}")


def semvae_loss(
    recon: torch.Tensor,
    target: torch.Tensor,
    mean: torch.Tensor,
    logvar: torch.Tensor,
    kl_weight: float = 1e-7,
    cos_axis: CosAxis = "channel",
) -> dict[str, torch.Tensor]:
    """``mse + cos + kl_weight * kl``, the cosine per token by default (``cos_axis="token"``:
    the release's, module docstring). Returns the scalar terms ``loss``, ``mse``, ``cos``
    (= mean of 1 - cos) and ``kl``."""
    mse = F.mse_loss(recon, target)
    cos = (1.0 - reconstruction_cosine(recon, target, cos_axis)).mean()
    kl = gaussian_kl_per_sample(mean, logvar).mean()
    return {"loss": mse + cos + kl_weight * kl, "mse": mse, "cos": cos, "kl": kl}


def num_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def save_semvae(model: SemanticVAE, directory: str | Path, info: dict | None = None) -> Path:
    """Write ``semvae.safetensors`` (the weights) and ``semvae.json`` (config + ``info``)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    atomic_save_safetensors(
        directory / WEIGHTS_FILE, model.state_dict(), metadata={"format": FORMAT}
    )
    atomic_write_json(
        directory / CONFIG_FILE, {"format": FORMAT, "config": asdict(model.config), **(info or {})}
    )
    return directory


def load_semvae(directory: str | Path, device: str | torch.device = "cpu") -> SemanticVAE:
    """A saved SemVAE, strictly loaded, in eval mode without gradients. A config saved
    before ``layer_norm_eps`` existed gets :data:`LEGACY_LAYER_NORM_EPS`, the eps it was
    trained with (not today's default)."""
    directory = Path(directory)
    config_path = directory / CONFIG_FILE
    if not config_path.exists():
        raise FileNotFoundError(
            f"{directory} is not a SemVAE directory (no {CONFIG_FILE}); "
            f"train one with `sfd train-semvae`"
        )
    meta = json.loads(config_path.read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{config_path}: format {meta.get('format')!r} is not {FORMAT!r}")
    config = {"layer_norm_eps": LEGACY_LAYER_NORM_EPS, **meta["config"]}
    model = SemanticVAE(SemVAEConfig(**config))
    model.load_state_dict(load_file(str(directory / WEIGHTS_FILE)), strict=True)
    model.trained_on = meta.get("encoder")
    return model.to(device).eval().requires_grad_(False)
