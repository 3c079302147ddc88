"""Building blocks of the LightningDiT backbone (docs/METHOD.md §2.5-2.6).

Sources: DiT (Peebles & Xie 2023) for adaLN-Zero, timestep and label embedders; LightningDiT
(Yao et al. 2025) for RMSNorm, QK-norm, SwiGLU and 2D RoPE; EVA-02 (Fang et al. 2023) for the
interleaved-pair rotary layout; MAE (He et al. 2022) for the 2D sin-cos position table. Module
and parameter names follow the SFD release so its checkpoints load without renaming.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    """Root-mean-square norm with a learnable gain, computed in float32 (eps 1e-6)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32 and self.weight.dtype == torch.float32:
            # One kernel, the same float32 arithmetic as below (bit-identical on CPU).
            return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)
        xf = x.float()
        normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight


def make_norm(dim: int, rms: bool) -> nn.Module:
    return RMSNorm(dim) if rms else nn.LayerNorm(dim, eps=1e-6)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN modulation of tokens (B, T, D) by per-sample (B, D) shift and scale.

    ``x * (1 + scale) + shift`` as one ``addcmul`` (no (B, T, D) temporary).
    """
    return torch.addcmul(shift.unsqueeze(1), x, 1 + scale.unsqueeze(1))


def gated(x: torch.Tensor, gate: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The adaLN-Zero residual ``x + gate * y`` for tokens (B, T, D) and a (B, D) gate."""
    return torch.addcmul(x, gate.unsqueeze(1), y)


def timestep_features(t: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of raw times t in [0, 1] (no x1000): [cos | sin], (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    )
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class TimestepEmbedder(nn.Module):
    """Sinusoid (256 features) -> Linear -> SiLU -> Linear."""

    def __init__(self, width: int, freq_dim: int = 256) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        feats = timestep_features(t, self.freq_dim).to(self.mlp[0].weight.dtype)
        return self.mlp(feats)


class LabelEmbedder(nn.Module):
    """Class embedding table with one extra "null" row (index num_classes) for guidance.

    Label dropout is not done here: the training step passes labels already replaced by the
    null index (the model stays a pure function of its inputs).
    """

    def __init__(self, num_classes: int, width: int, with_null: bool) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.embedding_table = nn.Embedding(num_classes + int(with_null), width)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.embedding_table(y)


class SwiGLU(nn.Module):
    """SwiGLU feed-forward: w3(silu(a) * b) with [a, b] = w12(x)."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.w12 = nn.Linear(width, 2 * hidden)
        self.w3 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(a) * b)


class GeluMLP(nn.Module):
    """The plain DiT feed-forward (used when SwiGLU is switched off)."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


def sincos_pos_embed_2d(width: int, grid: int) -> torch.Tensor:
    """Fixed 2D sin-cos position table (1, grid*grid, width), MAE layout, computed in float64.

    Tokens are row-major over (h, w). The first half of the channels encodes the column (w),
    the second half the row (h); each half is [sin | cos] with frequencies 10000^(-2i/(width/2)).
    """
    if width % 4:
        raise ValueError(f"position-embedding width must be divisible by 4; got {width}")
    quarter = width // 4
    omega = 1.0 / 10000 ** (np.arange(quarter, dtype=np.float64) / quarter)
    hh, ww = np.meshgrid(
        np.arange(grid, dtype=np.float64), np.arange(grid, dtype=np.float64), indexing="ij"
    )

    def axis(pos: np.ndarray) -> np.ndarray:
        out = np.outer(pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    table = np.concatenate([axis(ww), axis(hh)], axis=1)  # (T, width)
    return torch.from_numpy(table).float().unsqueeze(0)


def rope_tables(
    head_dim: int, grid: int, theta: float = 10000.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """2D rotary tables (T, head_dim): [row frequencies | column frequencies], pairs interleaved.

    Each axis gets head_dim/2 channels with frequencies theta^(-2i/(head_dim/2)), each repeated
    for an adjacent pair (2i, 2i+1), as in EVA-02's ``VisionRotaryEmbeddingFast``.
    """
    axis_dim = head_dim // 2
    freqs = 1.0 / theta ** (torch.arange(0, axis_dim, 2)[: axis_dim // 2].float() / axis_dim)
    pos = torch.arange(grid, dtype=torch.float32)
    f = torch.einsum("i,f->if", pos, freqs).repeat_interleave(2, dim=-1)  # (grid, axis_dim)
    rows = f[:, None, :].expand(grid, grid, axis_dim)
    cols = f[None, :, :].expand(grid, grid, axis_dim)
    table = torch.cat([rows, cols], dim=-1).reshape(grid * grid, head_dim)
    return table.cos(), table.sin()


def rotate_pairs(x: torch.Tensor) -> torch.Tensor:
    """(x[2i], x[2i+1]) -> (-x[2i+1], x[2i]) along the last axis."""
    pairs = x.unflatten(-1, (-1, 2))
    return torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)


class Rope2D(nn.Module):
    """Applies 2D RoPE; the tables are persistent buffers (they are in release checkpoints)."""

    def __init__(self, head_dim: int, grid: int) -> None:
        super().__init__()
        cos, sin = rope_tables(head_dim, grid)
        self.register_buffer("freqs_cos", cos)
        self.register_buffer("freqs_sin", sin)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, heads, T, head_dim)
        if x.dtype == torch.float32 and not torch.compiler.is_compiling():
            # The same rotation as one complex multiply per pair (x[2i] + i x[2i+1]) by
            # (cos + i sin): ~5x faster in eager on CPU and bit-identical. Compiled blocks take
            # the real form below, which inductor fuses (it does not lower complex tensors).
            rot = torch.complex(self.freqs_cos[:, 0::2], self.freqs_sin[:, 0::2])  # (T, hd/2)
            pairs = x.unflatten(-1, (-1, 2))  # q, k: views of qkv, already viewable as complex
            if pairs.storage_offset() % 2 or any(st % 2 for st in pairs.stride()[:-1]):
                pairs = pairs.contiguous()
            pairs = torch.view_as_complex(pairs)
            return torch.view_as_real(pairs * rot).flatten(-2)
        return x * self.freqs_cos + rotate_pairs(x) * self.freqs_sin


class Attention(nn.Module):
    """Multi-head self-attention: fused qkv with bias, per-head RMSNorm on q and k, RoPE, SDPA."""

    def __init__(self, width: int, num_heads: int, qk_norm: bool, rms: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        head_dim = width // num_heads
        self.qkv = nn.Linear(width, 3 * width)
        self.q_norm = make_norm(head_dim, rms) if qk_norm else nn.Identity()
        self.k_norm = make_norm(head_dim, rms) if qk_norm else nn.Identity()
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, rope: Rope2D | None) -> torch.Tensor:
        b, t, d = x.shape
        qkv = self.qkv(x).reshape(b, t, 3, self.num_heads, d // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, T, head_dim)
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = rope(q), rope(k)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, T, head_dim)
        return self.proj(out.transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    """A LightningDiT block with adaLN-Zero conditioning."""

    def __init__(
        self,
        width: int,
        num_heads: int,
        mlp_ratio: float,
        *,
        qk_norm: bool,
        swiglu: bool,
        rms: bool,
    ) -> None:
        super().__init__()
        self.norm1 = make_norm(width, rms)
        self.attn = Attention(width, num_heads, qk_norm, rms)
        self.norm2 = make_norm(width, rms)
        mlp_hidden = int(width * mlp_ratio)
        self.mlp = SwiGLU(width, int(2 / 3 * mlp_hidden)) if swiglu else GeluMLP(width, mlp_hidden)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))

    def forward(self, x: torch.Tensor, c: torch.Tensor, rope: Rope2D | None) -> torch.Tensor:
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = self.adaLN_modulation(c).chunk(6, -1)
        x = gated(x, gate_a, self.attn(modulate(self.norm1(x), shift_a, scale_a), rope))
        return gated(x, gate_m, self.mlp(modulate(self.norm2(x), shift_m, scale_m)))


class FinalLayer(nn.Module):
    """adaLN (shift, scale; no gate) -> Linear to p*p*C velocity channels per token."""

    def __init__(self, width: int, patch_size: int, out_channels: int, rms: bool) -> None:
        super().__init__()
        self.norm_final = make_norm(width, rms)
        self.linear = nn.Linear(width, patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)
        return self.linear(modulate(self.norm_final(x), shift, scale))
