"""The FID Inception-v3 network (TF ``inception-2015-12-05`` graph) in plain PyTorch.

This is the network behind the ADM evaluator (Dhariwal & Nichol 2021, openai/guided-diffusion
``evaluations/evaluator.py``), which runs the TF graph ``classify_image_graph_def.pb``. Its weights
as a PyTorch state dict are ``pt_inception-2015-12-05-6726825d.pth`` (mseitzer/pytorch-fid,
``src/pytorch_fid/inception.py``; the same file, same hash, as torch-fidelity's
``weights-inception-2015-12-05-6726825d.pth``, produced by toshas/torch-fidelity
``utils/util_convert_inception_weights.py``). Written anew from reading those sources; module and
parameter names follow the published file exactly so it loads strictly.

Differences from torchvision's Inception-v3 that the TF graph has (pytorch-fid, torch-fidelity):
average pools inside blocks exclude padding (``count_include_pad=False``); the last block
(``Mixed_7c``) pools its fourth branch with a *max* pool; no auxiliary head; ``fc`` has 1008
outputs. The graph's own preprocessing is reproduced: TF1 ``ResizeBilinear`` to 299x299
(legacy coordinates, see :func:`resize_bilinear_tf1`) then ``(x - 128) / 128``.

Outputs, named as in the TF graph:

* ``pool3`` — ``pool_3:0``, (B, 2048): FID, precision/recall, and IS (through :meth:`logits`).
* ``spatial`` — ``mixed_6/conv:0[..., :7]`` flattened in NHWC order, (B, 7*17*17 = 2023): sFID.
  TF's ``mixed_6`` is torch's ``Mixed_6d`` (``mixed`` = ``Mixed_5b``, counted on from there;
  the converter maps ``mixed_6/conv/*`` to ``Mixed_6d.branch1x1.*``), and ``mixed_6/conv`` is
  that 1x1 branch after batch norm and ReLU.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from sfd.data.tensor_files import load_torch_file

INPUT_SIZE = 299
POOL3_DIM = 2048
NUM_LOGITS = 1008
SPATIAL_CHANNELS = 7  # ADM keeps the first 7 channels of mixed_6/conv
SPATIAL_DIM = SPATIAL_CHANNELS * 17 * 17  # 2023
WEIGHTS_FILENAME = "pt_inception-2015-12-05-6726825d.pth"


class InceptionFeatures(NamedTuple):
    pool3: torch.Tensor  # (B, 2048) float32
    spatial: torch.Tensor  # (B, 2023) float32


def resize_bilinear_tf1(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize exactly as TF1 ``tf.image.resize_bilinear(align_corners=False)``.

    TF1's legacy kernel (``resize_bilinear_op.cc``, ``LegacyScaler``) samples output pixel ``i``
    at source coordinate ``i * in/out`` with ``in/out`` a float32 quotient: there is *no*
    half-pixel offset (unlike ``F.interpolate(align_corners=False)``) and no antialiasing. The
    upper neighbour is clamped to the border, and the lerp order (rows of the top pair, then
    between rows) follows TF. Same construction as torch-fidelity's
    ``interpolate_bilinear_2d_like_tensorflow1x``.

    Args:
        x: (B, C, H, W) floating tensor.
        size: output (height, width).
    """
    if x.ndim != 4 or not x.is_floating_point():
        raise ValueError(f"expected a floating (B, C, H, W) tensor, got {x.dtype} {tuple(x.shape)}")
    y_lo, y_hi, y_lerp = _tf1_axis(x.shape[2], size[0], x.device)
    x_lo, x_hi, x_lerp = _tf1_axis(x.shape[3], size[1], x.device)
    top = x[:, :, y_lo]  # (B, C, out_h, W)
    bottom = x[:, :, y_hi]
    top_left, top_right = top[..., x_lo], top[..., x_hi]  # (B, C, out_h, out_w)
    bottom_left, bottom_right = bottom[..., x_lo], bottom[..., x_hi]
    x_lerp = x_lerp.to(x.dtype)
    y_lerp = y_lerp.to(x.dtype)[:, None]
    top = top_left + (top_right - top_left) * x_lerp
    bottom = bottom_left + (bottom_right - bottom_left) * x_lerp
    return top + (bottom - top) * y_lerp


def _tf1_axis(in_size: int, out_size: int, device: torch.device):
    """Source indices and weights along one axis, computed in float32 like TF."""
    scale = torch.tensor(in_size, dtype=torch.float32) / torch.tensor(out_size, dtype=torch.float32)
    src = torch.arange(out_size, dtype=torch.float32) * scale
    lower = torch.floor(src)
    lo = lower.long().clamp(0, in_size - 1)
    hi = torch.ceil(src).long().clamp(max=in_size - 1)
    return lo.to(device), hi.to(device), (src - lower).to(device)


def as_nchw_uint8(images: torch.Tensor) -> torch.Tensor:
    """Accept (B, 3, H, W) or (B, H, W, 3) uint8 images; return them as NCHW."""
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(
            f"expected uint8 images of shape (B, 3, H, W) or (B, H, W, 3), "
            f"got {images.dtype} {tuple(images.shape)}"
        )
    if images.shape[1] == 3:
        return images
    if images.shape[3] == 3:
        return images.permute(0, 3, 1, 2)
    raise ValueError(f"expected 3 colour channels first or last, got shape {tuple(images.shape)}")


class BasicConv2d(nn.Sequential):
    """Convolution without bias, batch norm (eps 1e-3, as in the TF graph), ReLU."""

    def __init__(self, cin: int, cout: int, kernel_size, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3)
        self.relu = nn.ReLU(inplace=True)


def _avg_pool(x: torch.Tensor) -> torch.Tensor:
    # TF's SAME average pool divides by the number of real (unpadded) inputs.
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    """35x35 block (TF ``mixed``, ``mixed_1``, ``mixed_2``)."""

    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, 1)
        self.branch5x5_1 = BasicConv2d(cin, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(_avg_pool(x))
        return torch.cat([self.branch1x1(x), b5, b3, bp], 1)


class InceptionB(nn.Module):
    """Grid reduction 35 -> 17 (TF ``mixed_3``)."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, 3, stride=2)], 1)


class InceptionC(nn.Module):
    """17x17 block with factorised 7x7 convolutions (TF ``mixed_4`` ... ``mixed_7``)."""

    def __init__(self, cin: int, c7: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 192, 1)
        self.branch7x7_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def branches(self, x: torch.Tensor) -> list[torch.Tensor]:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = x
        for i in range(1, 6):
            bd = getattr(self, f"branch7x7dbl_{i}")(bd)
        return [self.branch1x1(x), b7, bd, self.branch_pool(_avg_pool(x))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(self.branches(x), 1)


class InceptionD(nn.Module):
    """Grid reduction 17 -> 8 (TF ``mixed_8``)."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = x
        for i in range(1, 5):
            b7 = getattr(self, f"branch7x7x3_{i}")(b7)
        return torch.cat([b3, b7, F.max_pool2d(x, 3, stride=2)], 1)


class InceptionE(nn.Module):
    """8x8 block with split 1x3/3x1 outputs (TF ``mixed_9``, ``mixed_10``).

    ``pool="avg"`` is ``Mixed_7b``; the TF graph's ``Mixed_7c`` uses a max pool in its pool branch
    (pytorch-fid ``FIDInceptionE_2``), selected by ``pool="max"``.
    """

    def __init__(self, cin: int, pool: str):
        super().__init__()
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}")
        self.pool = pool
        self.branch1x1 = BasicConv2d(cin, 320, 1)
        self.branch3x3_1 = BasicConv2d(cin, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_1(x)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.pool == "max" else _avg_pool(x)
        return torch.cat(
            [
                self.branch1x1(x),
                self.branch3x3_2a(b3),
                self.branch3x3_2b(b3),
                self.branch3x3dbl_3a(bd),
                self.branch3x3dbl_3b(bd),
                self.branch_pool(pooled),
            ],
            1,
        )


class FIDInceptionV3(nn.Module):
    """Inception-v3 of the TF ``inception-2015-12-05`` graph, as used by the ADM evaluator.

    ``forward`` takes uint8 images (NCHW or NHWC, any size) and returns
    :class:`InceptionFeatures`; :meth:`logits` maps ``pool3`` to the 1008 logits ADM's Inception
    Score uses. Randomly initialised; load the published weights with :func:`load_inception`.
    """

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, c7=128)
        self.Mixed_6c = InceptionC(768, c7=160)
        self.Mixed_6d = InceptionC(768, c7=160)
        self.Mixed_6e = InceptionC(768, c7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, pool="avg")
        self.Mixed_7c = InceptionE(2048, pool="max")
        self.fc = nn.Linear(POOL3_DIM, NUM_LOGITS)
        self.requires_grad_(False)
        self.to(memory_format=torch.channels_last)  # faster convolutions on CPU (oneDNN) and GPU
        self.eval()

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images -> the graph's input: TF1-resized to 299x299, scaled to [-1, 1)."""
        x = as_nchw_uint8(images).to(self.fc.weight.device, self.fc.weight.dtype)
        x = resize_bilinear_tf1(x, (INPUT_SIZE, INPUT_SIZE))
        x = (x - 128) / 128  # the graph's Sub(128), Mul(1/128); exact in binary floating point
        return x.contiguous(memory_format=torch.channels_last)

    def forward(self, images: torch.Tensor) -> InceptionFeatures:
        x = self.preprocess(images)
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)  # (B, 64, 73, 73)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, 3, stride=2)  # (B, 192, 35, 35)
        x = self.Mixed_6c(
            self.Mixed_6b(self.Mixed_6a(self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(x)))))
        )
        branches = self.Mixed_6d.branches(x)
        conv = branches[0][:, :SPATIAL_CHANNELS]  # mixed_6/conv, (B, 7, 17, 17)
        spatial = conv.permute(0, 2, 3, 1).reshape(len(conv), -1)  # NHWC flatten, (B, 2023)
        x = self.Mixed_6e(torch.cat(branches, 1))
        x = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))  # (B, 2048, 8, 8)
        pool3 = x.mean(dim=(2, 3))  # pool_3: 8x8 average pool, (B, 2048)
        return InceptionFeatures(pool3.float(), spatial.float())

    def logits(self, pool3: torch.Tensor) -> torch.Tensor:
        """(B, 2048) -> (B, 1008) ``softmax/logits/MatMul`` without the bias, as ADM's IS uses."""
        return pool3.to(self.fc.weight.dtype) @ self.fc.weight.T


def load_inception(path: str | Path, device: str | torch.device = "cpu") -> FIDInceptionV3:
    """Build :class:`FIDInceptionV3` and load ``pt_inception-2015-12-05-6726825d.pth`` strictly.

    The published file has no ``num_batches_tracked`` buffers (they do not affect evaluation);
    they are the only keys that may be absent. Any other missing, extra or mis-shaped tensor is
    a ``ValueError`` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(
            f"Inception weights file {path} does not exist (expected {WEIGHTS_FILENAME})"
        )
    state = load_torch_file(path, "Inception weights file")
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    with torch.device("meta"):  # shapes only: every tensor comes from the file
        net = FIDInceptionV3()
    expected = net.state_dict()
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    _check_keys(path, state, expected)
    for key in expected:
        if key.endswith("num_batches_tracked"):
            state[key] = torch.zeros((), dtype=torch.long)
    net.load_state_dict(state, strict=True, assign=True)
    return net.to(device, memory_format=torch.channels_last)


def _check_keys(path: Path, state: dict, expected: dict) -> None:
    wanted = {k for k in expected if not k.endswith("num_batches_tracked")}
    missing, extra = sorted(wanted - state.keys()), sorted(state.keys() - wanted)
    shapes = [
        f"{k}: {tuple(state[k].shape)} != {tuple(expected[k].shape)}"
        for k in sorted(wanted & state.keys())
        if tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if missing or extra or shapes:
        raise ValueError(
            f"{path} is not the FID Inception state dict ({WEIGHTS_FILENAME}): "
            f"missing {missing[:5]} ({len(missing)}), unexpected {extra[:5]} ({len(extra)}), "
            f"wrong shapes {shapes[:5]}"
        )
