"""Texture autoencoders: the diffusers directory format, LDM key conversion both ways."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import AutoencoderKL

from sfd.latents.texture import (
    RELEASE_F16D32,
    LDMLayout,
    TextureAutoencoder,
    diffusers_to_ldm,
    infer_ldm_layout,
    ldm_to_diffusers,
    load_texture_autoencoder,
)
from sfd.tools.synthetic import tiny_autoencoder

SMALL_RELEASE = LDMLayout(
    ch=32, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2, attn_levels=(4,), z_channels=32, embed_dim=32
)  # the release's layout at 1/4 width


def _tiny_vae(in_channels: int = 3) -> AutoencoderKL:
    return tiny_autoencoder(in_channels, widths=(8, 16))


def test_diffusers_directory_shapes_and_no_scaling(tmp_path):
    vae = _tiny_vae()
    vae.save_pretrained(tmp_path)
    ae = load_texture_autoencoder(tmp_path)
    assert isinstance(ae, TextureAutoencoder)
    assert (ae.channels, ae.downsample) == (4, 2)
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    mean, std = ae.encode(images)
    assert mean.shape == std.shape == (2, 4, 8, 8) and (std > 0).all()
    with torch.no_grad():
        posterior = vae.encode(images).latent_dist
    assert torch.equal(mean, posterior.mean) and torch.equal(std, posterior.std)  # no 0.18215
    assert ae.decode(mean).shape == (2, 3, 16, 16)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        ae.encode(torch.zeros(1, 1, 16, 16))
    with pytest.raises(ValueError, match="divisible"):
        ae.encode(torch.zeros(1, 3, 15, 15))


def test_release_layout_is_f16_with_32_channels():
    config = RELEASE_F16D32.diffusers_config()
    assert config["block_out_channels"] == (128, 128, 256, 256, 512)
    assert config["latent_channels"] == 32 and len(config["block_out_channels"]) == 5  # f16
    assert config["down_block_types"][-1] == "AttnDownEncoderBlock2D"  # the 16-px level
    assert config["up_block_types"][0] == "AttnUpDecoderBlock2D"
    assert config["down_block_types"].count("AttnDownEncoderBlock2D") == 1


def test_ldm_round_trip_gives_equal_outputs(tmp_path):
    torch.manual_seed(0)
    vae = AutoencoderKL(**SMALL_RELEASE.diffusers_config()).eval()
    ldm = diffusers_to_ldm(vae.state_dict(), SMALL_RELEASE)
    assert ldm["encoder.mid.attn_1.q.weight"].shape == (128, 128, 1, 1)
    assert ldm["decoder.up.4.attn.2.proj_out.weight"].shape == (128, 128, 1, 1)
    assert "encoder.down.1.block.0.nin_shortcut.weight" not in ldm  # 32 -> 32
    assert ldm["encoder.down.2.block.0.nin_shortcut.weight"].shape == (64, 32, 1, 1)
    assert infer_ldm_layout(ldm) == SMALL_RELEASE
    back = ldm_to_diffusers(ldm, SMALL_RELEASE)
    assert back.keys() == vae.state_dict().keys()
    torch.save({"state_dict": {**ldm, "loss.logvar": torch.zeros(())}}, tmp_path / "vae.ckpt")
    ae = load_texture_autoencoder(tmp_path / "vae.ckpt")
    assert (ae.channels, ae.downsample) == (32, 16)
    images = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        posterior = vae.encode(images).latent_dist
        decoded = vae.decode(posterior.mean).sample
    mean, std = ae.encode(images)
    assert torch.equal(mean, posterior.mean) and torch.equal(std, posterior.std)
    assert torch.equal(ae.decode(mean), decoded)


def _hand_written_ldm_state() -> dict[str, torch.Tensor]:
    """LDM ``AutoencoderKL`` names and shapes written out by hand for ch 32, ch_mult (1, 2),
    1 res-block, attention at level 1, z_channels = embed_dim = 4, RGB (LDM normalises with
    32 groups, so 32 channels is the smallest width)."""

    def resnet(prefix, c_in, c_out):
        spec = {
            f"{prefix}.norm1": (c_in,),
            f"{prefix}.conv1": (c_out, c_in, 3, 3),
            f"{prefix}.norm2": (c_out,),
            f"{prefix}.conv2": (c_out, c_out, 3, 3),
        }
        if c_in != c_out:
            spec[f"{prefix}.nin_shortcut"] = (c_out, c_in, 1, 1)
        return spec

    def attn(prefix, c):
        return {
            f"{prefix}.norm": (c,),
            **{f"{prefix}.{n}": (c, c, 1, 1) for n in ("q", "k", "v", "proj_out")},
        }

    spec = {
        "encoder.conv_in": (32, 3, 3, 3),
        **resnet("encoder.down.0.block.0", 32, 32),
        "encoder.down.0.downsample.conv": (32, 32, 3, 3),
        **resnet("encoder.down.1.block.0", 32, 64),
        **attn("encoder.down.1.attn.0", 64),
        **resnet("encoder.mid.block_1", 64, 64),
        **attn("encoder.mid.attn_1", 64),
        **resnet("encoder.mid.block_2", 64, 64),
        "encoder.norm_out": (64,),
        "encoder.conv_out": (8, 64, 3, 3),
        "quant_conv": (8, 8, 1, 1),
        "post_quant_conv": (4, 4, 1, 1),
        "decoder.conv_in": (64, 4, 3, 3),
        **resnet("decoder.mid.block_1", 64, 64),
        **attn("decoder.mid.attn_1", 64),
        **resnet("decoder.mid.block_2", 64, 64),
        **resnet("decoder.up.1.block.0", 64, 64),
        **attn("decoder.up.1.attn.0", 64),
        **resnet("decoder.up.1.block.1", 64, 64),
        **attn("decoder.up.1.attn.1", 64),
        "decoder.up.1.upsample.conv": (64, 64, 3, 3),
        **resnet("decoder.up.0.block.0", 64, 32),
        **resnet("decoder.up.0.block.1", 32, 32),
        "decoder.norm_out": (32,),
        "decoder.conv_out": (3, 32, 3, 3),
    }
    g = torch.Generator().manual_seed(0)
    state = {}
    for name, shape in spec.items():
        scale = 1.0 if "norm" in name else 0.1
        state[f"{name}.weight"] = 1.0 - scale + scale * torch.randn(shape, generator=g)
        state[f"{name}.bias"] = 0.1 * torch.randn(shape[0], generator=g)
    return state


def _ldm_attention(state: dict, prefix: str, x: torch.Tensor) -> torch.Tensor:
    """LDM's ``AttnBlock``: GroupNorm(32), 1x1-conv q, k, v, softmax(q^T k / sqrt(C)) over
    positions, v weighted, 1x1-conv proj_out, residual."""
    c = x.shape[1]
    p = {
        n: (state[f"{prefix}.{n}.weight"], state[f"{prefix}.{n}.bias"])
        for n in ("q", "k", "v", "proj_out")
    }
    h = torch.nn.functional.group_norm(
        x, 32, state[f"{prefix}.norm.weight"], state[f"{prefix}.norm.bias"], eps=1e-6
    )
    q, k, v = (torch.nn.functional.conv2d(h, *p[n]).flatten(2) for n in ("q", "k", "v"))
    weights = torch.softmax(q.transpose(1, 2) @ k / math.sqrt(c), dim=-1)  # (B, HW, HW)
    out = (v @ weights.transpose(1, 2)).view_as(x)
    return x + torch.nn.functional.conv2d(out, *p["proj_out"])


def test_hand_written_ldm_checkpoint_loads_and_attends_like_ldm(tmp_path):
    state = _hand_written_ldm_state()
    assert infer_ldm_layout(state) == LDMLayout(
        ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_levels=(1,), z_channels=4, embed_dim=4
    )
    torch.save(state, tmp_path / "vae.pt")
    ae = load_texture_autoencoder(tmp_path / "vae.pt")  # strict
    mean, std = ae.encode(torch.rand(1, 3, 8, 8) * 2 - 1)
    assert mean.shape == (1, 4, 4, 4) and ae.decode(mean).shape == (1, 3, 8, 8)
    x = torch.randn(2, 64, 4, 4)
    with torch.no_grad():
        mid = ae.vae.encoder.mid_block.attentions[0](x)
        down = ae.vae.encoder.down_blocks[1].attentions[0](x)
        up = ae.vae.decoder.up_blocks[0].attentions[1](x)
    assert torch.allclose(mid, _ldm_attention(state, "encoder.mid.attn_1", x), atol=1e-5)
    assert torch.allclose(down, _ldm_attention(state, "encoder.down.1.attn.0", x), atol=1e-5)
    assert torch.allclose(up, _ldm_attention(state, "decoder.up.1.attn.1", x), atol=1e-5)


def test_ldm_errors_are_named(tmp_path):
    state = diffusers_to_ldm(
        AutoencoderKL(
            **LDMLayout(
                ch=32, ch_mult=(1, 2), attn_levels=(), z_channels=4, embed_dim=4
            ).diffusers_config()
        ).state_dict(),
        LDMLayout(ch=32, ch_mult=(1, 2), attn_levels=(), z_channels=4, embed_dim=4),
    )
    torch.save({**state, "encoder.extra.weight": torch.zeros(1)}, tmp_path / "extra.ckpt")
    with pytest.raises(ValueError, match="do not fit the layout"):
        load_texture_autoencoder(tmp_path / "extra.ckpt")
    torch.save({"decoder.conv_out.weight": torch.zeros(3, 8, 3, 3)}, tmp_path / "partial.ckpt")
    with pytest.raises(ValueError, match="not an LDM KL-autoencoder"):
        load_texture_autoencoder(tmp_path / "partial.ckpt")
    with pytest.raises(ValueError, match="z_channels == embed_dim"):
        LDMLayout(z_channels=4, embed_dim=8).diffusers_config()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_texture_autoencoder(tmp_path / "missing.ckpt")
