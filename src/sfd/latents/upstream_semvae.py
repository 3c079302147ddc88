"""Import the official release's Semantic VAE into :class:`sfd.latents.semvae.SemanticVAE`.

The release's SemVAE (``tokenizer/semvae/models/vae.py``, ``create_semantic_autoencoder(
arch="transformer", is_vae=True, ...)``; Pan et al. 2026, docs/METHOD.md §2.2) is the same network
as sfd's: a token-wise transformer with Linear in, pre-LN blocks (``nn.MultiheadAttention`` and
a GELU MLP of 4x the width), a final LayerNorm and Linear out, no positional embedding. Only
names and the layout differ (the LayerNorm eps, PyTorch's default 1e-5, is sfd's default too and
is set explicitly on import):

- ``encoder.0`` / ``decoder.0`` are ``proj_in``; ``{part}.{i}`` for i = 1..N is ``blocks.{i-1}``;
  ``{part}.{N+1}`` is ``norm`` and ``{part}.{N+2}`` is ``proj_out``.
- ``attn.in_proj_weight`` / ``in_proj_bias`` (rows q, k, v, heads contiguous within each) are
  exactly the fused ``qkv`` Linear sfd splits as (3, heads, head_dim); ``attn.out_proj`` is
  ``proj``. Scaling 1/sqrt(head_dim) in both.
- The release feeds tokens first, (B, L, C); sfd takes a grid (B, C, h, w), row-major tokens
  (:func:`tokens_to_grid`). The posterior noise the release draws as ``randn(B, C_s, h, w)`` is
  sfd's ``noise`` argument as it stands.

Not copied: the release's ``encode`` zero-pads a token count that is not a perfect square to
256 tokens (or truncates it, returning 256 tokens for L > 256). sfd encodes exactly the tokens
it is given; :func:`tokens_to_grid` refuses a count that is not the grid asked for. The
release's loss (cosine over the token axis) is ``semvae_loss(..., cos_axis="token")``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from sfd.data.tensor_files import load_tensor_file
from sfd.latents.semvae import RELEASE_LAYER_NORM_EPS, SemanticVAE, SemVAEConfig, save_semvae

REQUIRED_KWARGS = (
    "input_dim",
    "bottleneck_dim",
    "hidden_dim",
    "transformer_heads",
    "transformer_blocks",
)
UNUSED_KWARGS = ("num_layers", "num_res_blocks")  # other archs' settings; ignored by the release


def read_release_kwargs(config_path: str | Path) -> dict:
    """``create_semantic_autoencoder`` kwargs from a JSON file: either the kwargs themselves or
    a fixture-style ``{"constructor": {"kwargs": {...}}}``."""
    path = Path(config_path)
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    kwargs = meta.get("constructor", {}).get("kwargs", meta) if isinstance(meta, dict) else None
    if not isinstance(kwargs, dict):
        raise ValueError(f"{path}: expected a JSON object of SemVAE constructor kwargs")
    return kwargs


def config_from_release_kwargs(kwargs: dict, source: str = "config") -> SemVAEConfig:
    """The sfd config of a release SemVAE built with ``create_semantic_autoencoder(**kwargs)``."""
    if kwargs.get("arch", "transformer") != "transformer" or not kwargs.get("is_vae", True):
        raise ValueError(
            f"{source}: only the release's transformer VAE (arch='transformer', is_vae=True) "
            f"can be imported; got arch={kwargs.get('arch')!r}, is_vae={kwargs.get('is_vae')!r}"
        )
    missing = [k for k in REQUIRED_KWARGS if k not in kwargs]
    unknown = sorted(set(kwargs) - {*REQUIRED_KWARGS, *UNUSED_KWARGS, "arch", "is_vae"})
    if missing or unknown:
        raise ValueError(f"{source}: missing kwargs {missing}, unknown kwargs {unknown}")
    return SemVAEConfig(
        in_dim=int(kwargs["input_dim"]),
        latent_channels=int(kwargs["bottleneck_dim"]),
        width=int(kwargs["hidden_dim"]),
        depth=int(kwargs["transformer_blocks"]),
        num_heads=int(kwargs["transformer_heads"]),
        mlp_ratio=4.0,
        pos_embed="none",
        layer_norm_eps=RELEASE_LAYER_NORM_EPS,
    )


def load_release_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A release state dict from ``.safetensors``, or from a ``torch.save`` file (loaded with
    ``weights_only=True``) holding the state dict or the release's final checkpoint dict
    (``{"model_state_dict": ..., "optimizer_state_dict": ..., ...}``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such state dict file")
    state = load_tensor_file(path, "SemVAE state dict")
    if isinstance(state, dict) and "model_state_dict" in state:
        state = state["model_state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: not a state dict of tensors")
    return state


def release_key(key: str, depth: int) -> str:
    """The release's name for an sfd SemVAE parameter (module docstring)."""
    part, module, *rest = key.split(".")
    if module == "proj_in":
        return ".".join([part, "0", *rest])
    if module == "norm":
        return ".".join([part, str(depth + 1), *rest])
    if module == "proj_out":
        return ".".join([part, str(depth + 2), *rest])
    index, sub, *tail = rest  # blocks.{i}.{sub}...
    prefix = f"{part}.{int(index) + 1}"
    if sub == "qkv":
        return f"{prefix}.attn.in_proj_{tail[0]}"
    if sub == "proj":
        return f"{prefix}.attn.out_proj.{tail[0]}"
    return ".".join([prefix, sub, *tail])


def convert_state_dict(
    release: dict[str, torch.Tensor], config: SemVAEConfig, source: str = "state dict"
) -> dict[str, torch.Tensor]:
    """sfd's state dict for ``config`` from the release's; every key and shape checked."""
    with torch.device("meta"):
        expected = SemanticVAE(config).state_dict()
    out, used = {}, set()
    for key, like in expected.items():
        name = release_key(key, config.depth)
        if name not in release:
            raise ValueError(
                f"{source}: missing key {name!r} of a release SemVAE with "
                f"{config.depth} blocks (sfd {key})"
            )
        if tuple(release[name].shape) != tuple(like.shape):
            raise ValueError(
                f"{source}: {name!r} has shape {tuple(release[name].shape)}; the config "
                f"needs {tuple(like.shape)}"
            )
        out[key] = release[name].float()
        used.add(name)
    unexpected = sorted(set(release) - used)
    if unexpected:
        raise ValueError(f"{source}: unexpected keys {unexpected[:5]} ({len(unexpected)} in all)")
    return out


def import_upstream_semvae(
    state_dict_path: str | Path, config_path: str | Path, out_dir: str | Path
) -> Path:
    """Write the release SemVAE at ``state_dict_path`` (constructor kwargs in ``config_path``)
    as an sfd SemVAE directory, loadable with :func:`sfd.latents.semvae.load_semvae`."""
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"output directory {out} is not empty; choose a new --out")
    kwargs = read_release_kwargs(config_path)
    config = config_from_release_kwargs(kwargs, str(config_path))
    state = convert_state_dict(
        load_release_state_dict(state_dict_path), config, str(state_dict_path)
    )
    model = SemanticVAE(config)
    model.load_state_dict(state, strict=True)
    info = {
        "imported_from": {
            "format": "release-semvae",
            "state_dict": str(state_dict_path),
            "config": str(config_path),
            "kwargs": kwargs,
        }
    }
    return save_semvae(model, out, info)


def tokens_to_grid(tokens: torch.Tensor, grid: tuple[int, int] | None = None) -> torch.Tensor:
    """Release-layout tokens (B, L, C) as sfd's (B, C, h, w), row-major: ``grid`` = (h, w), or
    a square √L x √L. A token count that is not that grid is refused (the release zero-pads or
    truncates it to 256 tokens instead)."""
    if tokens.ndim != 3:
        raise ValueError(f"tokens must be (B, L, C); got {tuple(tokens.shape)}")
    b, n, c = tokens.shape
    h, w = grid if grid is not None else (math.isqrt(n), math.isqrt(n))
    if h * w != n:
        raise ValueError(
            f"{n} tokens do not form a {h} x {w} grid; pass the feature grid (h, w) "
            f"(sfd does not pad or truncate to 256 tokens as the release does)"
        )
    return tokens.transpose(1, 2).reshape(b, c, h, w)


def grid_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """sfd's (B, C, h, w) as release-layout tokens (B, h*w, C)."""
    return x.flatten(2).transpose(1, 2)
