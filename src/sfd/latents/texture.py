"""Texture autoencoders: the pixel KL-VAE of docs/METHOD.md §2.3 behind one small interface.

``encode(images in [-1, 1]) -> (mean, std)`` of the diagonal Gaussian posterior on the latent
grid and ``decode(z) -> images in [-1, 1]``, with attributes ``channels`` and ``downsample``.
No latent scale (``0.18215`` or the like) is applied: normalisation is the job of
:class:`sfd.latents.composite.LatentStats`.

Both supported formats run as diffusers' ``AutoencoderKL`` (von Platen et al., diffusers):

- a diffusers directory (``config.json`` + weights; e.g. Stability's SD-VAE f8, 4 channels, or
  a VAE trained by ``sfd train-texture-vae``);
- a checkpoint of the LDM KL-autoencoder (Rombach et al. 2022, ``ldm/modules/diffusionmodules/
  model.py``; the release's LightningDiT ``ldm-imagenet256-f16d32`` VAE: ``ch`` 128, ``ch_mult``
  (1, 1, 2, 2, 4), 2 res-blocks, attention at the 16-px level, z 32 = embed 32). Its layout is
  read from the weight shapes, its keys are renamed to diffusers' (the mapping is enumerated
  from the layout, so the inverse is exact) and it is loaded strictly. LDM attention uses 1x1
  convolutions where diffusers uses Linear layers: those weights are reshaped. Training-only
  entries (``loss.*``: LPIPS and discriminator; VA-VAE's ``linear_proj.*``) are dropped.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from sfd.data.tensor_files import load_tensor_file
from sfd.errors import BadInputError

log = logging.getLogger(__name__)

IGNORED_PREFIXES = ("loss.", "linear_proj.")


@runtime_checkable
class TextureAutoencoder(Protocol):
    channels: int  # C_z
    downsample: int  # pixels per latent position along each axis

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (B, C, H, W) in [-1, 1] -> posterior (mean, std), each (B, C_z, H/f, W/f)."""
        ...

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (B, C_z, h, w) -> images (B, C, h*f, w*f) in [-1, 1] (not clamped)."""
        ...

    def describe(self) -> dict: ...


class KLAutoencoder(nn.Module):
    """A frozen diffusers ``AutoencoderKL`` as a :class:`TextureAutoencoder`."""

    def __init__(self, vae: nn.Module, source: dict | None = None) -> None:
        super().__init__()
        self.vae = vae.eval().requires_grad_(False)
        self.channels = int(vae.config.latent_channels)
        self.image_channels = int(vae.config.in_channels)
        self.downsample = 2 ** (len(vae.config.block_out_channels) - 1)
        self.source = dict(source or {})

    def train(self, mode: bool = True) -> KLAutoencoder:
        return super().train(False)

    def describe(self) -> dict:
        return {
            **self.source,
            "channels": self.channels,
            "downsample": self.downsample,
            "image_channels": self.image_channels,
        }

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if images.ndim != 4 or images.shape[1] != self.image_channels:
            raise ValueError(
                f"images must be (B, {self.image_channels}, H, W); got {tuple(images.shape)}"
            )
        if images.shape[-1] % self.downsample or images.shape[-2] % self.downsample:
            raise ValueError(
                f"image size {tuple(images.shape[-2:])} must be divisible by the "
                f"downsampling factor {self.downsample}"
            )
        posterior = self.vae.encode(images).latent_dist
        return posterior.mean, posterior.std

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim != 4 or z.shape[1] != self.channels:
            raise ValueError(f"latents must be (B, {self.channels}, h, w); got {tuple(z.shape)}")
        return self.vae.decode(z).sample


# ---------------------------------------------------------------------------------------------
# The LDM layout and its diffusers twin


@dataclass(frozen=True)
class LDMLayout:
    """Architecture of an LDM KL-autoencoder (``ddconfig``), attention given per level."""

    in_channels: int = 3
    out_ch: int = 3
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    attn_levels: tuple[int, ...] = (4,)  # levels whose resolution is in attn_resolutions
    z_channels: int = 32
    embed_dim: int = 32

    def diffusers_config(self) -> dict:
        """Keyword arguments of the equivalent ``AutoencoderKL``."""
        if self.z_channels != self.embed_dim:
            raise ValueError(
                f"diffusers' AutoencoderKL needs z_channels == embed_dim; got "
                f"{self.z_channels} and {self.embed_dim}"
            )
        n = len(self.ch_mult)
        return dict(
            in_channels=self.in_channels,
            out_channels=self.out_ch,
            down_block_types=tuple(
                "AttnDownEncoderBlock2D" if i in self.attn_levels else "DownEncoderBlock2D"
                for i in range(n)
            ),
            up_block_types=tuple(
                "AttnUpDecoderBlock2D" if n - 1 - i in self.attn_levels else "UpDecoderBlock2D"
                for i in range(n)
            ),
            block_out_channels=tuple(self.ch * m for m in self.ch_mult),
            layers_per_block=self.num_res_blocks,
            latent_channels=self.z_channels,
            norm_num_groups=32,
            scaling_factor=1.0,
        )


# The release's texture VAE (LightningDiT ldm-imagenet256-f16d32; attn_resolutions [16] at 256).
RELEASE_F16D32 = LDMLayout()


def _module_map(layout: LDMLayout) -> dict[str, str]:
    """LDM module name -> diffusers module name, for every module with weights."""
    names: dict[str, str] = {"quant_conv": "quant_conv", "post_quant_conv": "post_quant_conv"}

    def resnet(ldm: str, dif: str, c_in: int, c_out: int) -> None:
        for leaf in ("norm1", "conv1", "norm2", "conv2"):
            names[f"{ldm}.{leaf}"] = f"{dif}.{leaf}"
        if c_in != c_out:
            names[f"{ldm}.nin_shortcut"] = f"{dif}.conv_shortcut"

    def attention(ldm: str, dif: str) -> None:
        for a, b in (
            ("norm", "group_norm"),
            ("q", "to_q"),
            ("k", "to_k"),
            ("v", "to_v"),
            ("proj_out", "to_out.0"),
        ):
            names[f"{ldm}.{a}"] = f"{dif}.{b}"

    chans = [layout.ch * m for m in layout.ch_mult]
    n = len(chans)
    for side in ("encoder", "decoder"):
        for a, b in (
            ("conv_in", "conv_in"),
            ("norm_out", "conv_norm_out"),
            ("conv_out", "conv_out"),
        ):
            names[f"{side}.{a}"] = f"{side}.{b}"
        resnet(f"{side}.mid.block_1", f"{side}.mid_block.resnets.0", chans[-1], chans[-1])
        attention(f"{side}.mid.attn_1", f"{side}.mid_block.attentions.0")
        resnet(f"{side}.mid.block_2", f"{side}.mid_block.resnets.1", chans[-1], chans[-1])
    c_in = layout.ch
    for i in range(n):  # encoder: level i is diffusers down block i
        for j in range(layout.num_res_blocks):
            ldm, dif = f"encoder.down.{i}", f"encoder.down_blocks.{i}"
            resnet(f"{ldm}.block.{j}", f"{dif}.resnets.{j}", c_in if j == 0 else chans[i], chans[i])
            if i in layout.attn_levels:
                attention(f"{ldm}.attn.{j}", f"{dif}.attentions.{j}")
        if i != n - 1:
            names[f"encoder.down.{i}.downsample.conv"] = (
                f"encoder.down_blocks.{i}.downsamplers.0.conv"
            )
        c_in = chans[i]
    for i in reversed(range(n)):  # decoder: LDM level i is diffusers up block n - 1 - i
        ldm, dif = f"decoder.up.{i}", f"decoder.up_blocks.{n - 1 - i}"
        for j in range(layout.num_res_blocks + 1):
            resnet(f"{ldm}.block.{j}", f"{dif}.resnets.{j}", c_in if j == 0 else chans[i], chans[i])
            if i in layout.attn_levels:
                attention(f"{ldm}.attn.{j}", f"{dif}.attentions.{j}")
        if i != 0:
            names[f"{ldm}.upsample.conv"] = f"{dif}.upsamplers.0.conv"
        c_in = chans[i]
    return names


_ATTN_LEAF = re.compile(r"\.(q|k|v|proj_out)$")


def _rename(state: dict[str, torch.Tensor], names: dict[str, str], what: str) -> dict:
    out, unknown = {}, []
    for key, value in state.items():
        module, _, leaf = key.rpartition(".")
        if module not in names:
            unknown.append(key)
            continue
        out[f"{names[module]}.{leaf}"] = value
    if unknown:
        raise ValueError(f"{len(unknown)} {what} keys do not fit the layout, e.g. {unknown[:5]}")
    return out


def ldm_to_diffusers(state: dict[str, torch.Tensor], layout: LDMLayout) -> dict:
    """Rename an LDM KL-VAE state dict to diffusers' AutoencoderKL and reshape the attention
    1x1-conv weights (C, C, 1, 1) to Linear weights (C, C)."""
    names = _module_map(layout)
    state = {
        k: (v[:, :, 0, 0] if _ATTN_LEAF.search(k.rpartition(".")[0]) and v.ndim == 4 else v)
        for k, v in state.items()
    }
    return _rename(state, names, "LDM")


def diffusers_to_ldm(state: dict[str, torch.Tensor], layout: LDMLayout) -> dict:
    """The exact inverse of :func:`ldm_to_diffusers`."""
    names = {v: k for k, v in _module_map(layout).items()}
    out = _rename(state, names, "diffusers")
    return {
        k: (v[:, :, None, None] if _ATTN_LEAF.search(k.rpartition(".")[0]) and v.ndim == 2 else v)
        for k, v in out.items()
    }


def infer_ldm_layout(state: dict[str, torch.Tensor]) -> LDMLayout:
    """Read the LDM layout from the weight names and shapes of a state dict."""
    try:
        conv_in = state["encoder.conv_in.weight"]
        levels = sorted(
            {int(m.group(1)) for k in state if (m := re.match(r"encoder\.down\.(\d+)\.", k))}
        )
        blocks = {
            int(m.group(1))
            for k in state
            if (m := re.match(r"encoder\.down\.0\.block\.(\d+)\.", k))
        }
        ch = int(conv_in.shape[0])
        return LDMLayout(
            in_channels=int(conv_in.shape[1]),
            out_ch=int(state["decoder.conv_out.weight"].shape[0]),
            ch=ch,
            ch_mult=tuple(
                int(state[f"encoder.down.{i}.block.0.conv2.weight"].shape[0]) // ch for i in levels
            ),
            num_res_blocks=len(blocks),
            attn_levels=tuple(i for i in levels if f"encoder.down.{i}.attn.0.q.weight" in state),
            z_channels=int(state["encoder.conv_out.weight"].shape[0]) // 2,
            embed_dim=int(state["quant_conv.weight"].shape[0]) // 2,
        )
    except KeyError as err:
        raise ValueError(f"not an LDM KL-autoencoder state dict: missing {err}") from None


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A ``.ckpt``/``.pt``/``.pth`` (optionally under ``"state_dict"``) or ``.safetensors``
    file, without training-only entries (:data:`IGNORED_PREFIXES`)."""
    path = Path(path)
    state = load_tensor_file(path, "texture autoencoder checkpoint")
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BadInputError(f"{path} does not hold a state dict of tensors")
    dropped = [k for k in state if k.startswith(IGNORED_PREFIXES)]
    if dropped:
        log.info("ignoring %d training-only entries of %s", len(dropped), path)
    return {k: v for k, v in state.items() if not k.startswith(IGNORED_PREFIXES)}


# ---------------------------------------------------------------------------------------------
# Loaders


def load_ldm_autoencoder(path: str | Path) -> KLAutoencoder:
    """An LDM KL-VAE checkpoint as a frozen :class:`KLAutoencoder` (strict load)."""
    from diffusers import AutoencoderKL

    state = read_state_dict(path)
    layout = infer_ldm_layout(state)
    vae = AutoencoderKL(**layout.diffusers_config())
    vae.load_state_dict(ldm_to_diffusers(state, layout), strict=True)
    return KLAutoencoder(vae, {"format": "ldm", "path": str(path), "layout": asdict(layout)})


def load_diffusers_autoencoder(path: str | Path) -> KLAutoencoder:
    """A local diffusers ``AutoencoderKL`` directory as a frozen :class:`KLAutoencoder`."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(str(path), local_files_only=True, low_cpu_mem_usage=False)
    return KLAutoencoder(vae, {"format": "diffusers", "path": str(path)})


def load_texture_autoencoder(path: str | Path) -> KLAutoencoder:
    """A diffusers directory (has ``config.json``) or an LDM checkpoint file."""
    path = Path(path)
    if path.is_dir():
        config = path / "config.json"
        if not config.exists():
            raise FileNotFoundError(
                f"{path} has no config.json; expected a diffusers "
                f"AutoencoderKL directory (save_pretrained)"
            )
        kind = json.loads(config.read_text()).get("_class_name")
        if kind != "AutoencoderKL":
            raise ValueError(f"{config} describes {kind!r}; expected 'AutoencoderKL'")
        return load_diffusers_autoencoder(path)
    if path.is_file():
        return load_ldm_autoencoder(path)
    raise FileNotFoundError(f"texture autoencoder {path} does not exist")
