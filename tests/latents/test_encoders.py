"""Frozen encoders: EfficientNet-Lite0 with its real weights, DINOv2 from a local directory."""

from __future__ import annotations

import os

import pytest
import torch

from sfd.latents.encoders import (
    Dinov2Encoder,
    EfficientNetLite0Encoder,
    FeatureEncoder,
    imagenet_normalize,
    load_efficientnet_lite0,
    load_encoder,
    resize_images,
    to_rgb,
)
from tests.helpers import TINY_DINOV2

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def effnet():
    return EfficientNetLite0Encoder(grid=8, stride=16)


def test_efficientnet_maps_32px_to_an_8x8_grid(effnet):
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    features = effnet.features(images)
    assert features.shape == (2, 112, 8, 8) and effnet.dim == 112 and effnet.grid == 8
    assert torch.isfinite(features).all() and features.std() > 0
    assert isinstance(effnet, FeatureEncoder)
    assert effnet.describe()["input_size"] == 128


def test_efficientnet_grayscale_is_replicated(effnet):
    gray = torch.rand(2, 1, 32, 32) * 2 - 1
    assert torch.equal(effnet.features(gray), effnet.features(gray.expand(-1, 3, -1, -1)))


def test_efficientnet_is_frozen_and_batch_independent(effnet):
    effnet.train()
    assert not effnet.training and not any(p.requires_grad for p in effnet.parameters())
    images = torch.rand(3, 3, 32, 32) * 2 - 1
    both = effnet.features(images)
    assert torch.allclose(both[1:2], effnet.features(images[1:2]), atol=1e-4)


def test_folded_batchnorms_compute_the_network_of_the_weights_file(effnet):
    raw = load_efficientnet_lite0().eval()
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        x = raw._swish(raw._bn0(raw._conv_stem(effnet._prepare(images, 128))))
        for block in raw._blocks[: effnet.last_block + 1]:
            x = block(x)
        pooled = raw.extract_features(effnet._prepare(images, 64)).mean((2, 3))
    assert torch.allclose(effnet.features(images), x, rtol=1e-3, atol=1e-3 * x.abs().max())
    assert torch.allclose(effnet.pooled(images, 64), pooled, rtol=1e-3, atol=1e-3)


def test_efficientnet_pooled_features(effnet):
    pooled = effnet.pooled(torch.rand(2, 1, 32, 32) * 2 - 1, size=64)
    assert pooled.shape == (2, 1280) and (pooled >= 0).all()  # ReLU6 head


def test_efficientnet_stride_8_and_bad_stride():
    encoder = EfficientNetLite0Encoder(grid=4, stride=8, normalization="lite")
    assert encoder.features(torch.zeros(1, 3, 32, 32)).shape == (1, 40, 4, 4)
    assert encoder.input_size == 32
    with pytest.raises(ValueError, match="stride must be one of"):
        EfficientNetLite0Encoder(stride=5)


def test_image_checks_and_normalisation():
    with pytest.raises(ValueError, match="1 or 3"):
        to_rgb(torch.zeros(1, 2, 8, 8))
    mean = imagenet_normalize(torch.zeros(1, 3, 1, 1)).flatten()
    expected = (0.5 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(mean, expected)


def _save_dinov2(path, registers: int):
    from transformers import (
        Dinov2Config,
        Dinov2Model,
        Dinov2WithRegistersConfig,
        Dinov2WithRegistersModel,
    )

    kwargs = dict(TINY_DINOV2)
    torch.manual_seed(0)
    if registers:
        model = Dinov2WithRegistersModel(
            Dinov2WithRegistersConfig(num_register_tokens=registers, **kwargs)
        )
    else:
        model = Dinov2Model(Dinov2Config(**kwargs))
    model.save_pretrained(path)
    return model.eval()


@pytest.mark.parametrize("registers", [0, 4])
def test_dinov2_patch_tokens_on_a_16x16_grid(tmp_path, registers):
    reference = _save_dinov2(tmp_path, registers)
    encoder = Dinov2Encoder(tmp_path)
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    features = encoder.features(images)
    assert features.shape == (2, 32, 16, 16) and encoder.grid == 16 and encoder.dim == 32
    with torch.no_grad():
        pixels = imagenet_normalize(
            torch.nn.functional.interpolate(images, size=224, mode="bicubic", antialias=False)
        )
        tokens = reference(pixel_values=pixels).last_hidden_state  # CLS, registers, patches
    # Token (row i, column j) sits at map position [:, :, i, j]; CLS and registers dropped.
    assert torch.allclose(features[:, :, 0, 0], tokens[:, 1 + registers], atol=1e-5)
    assert torch.allclose(features[:, :, 2, 5], tokens[:, 1 + registers + 2 * 16 + 5], atol=1e-5)
    resized = Dinov2Encoder(tmp_path, grid=8).features(images)
    assert resized.shape == (2, 32, 8, 8)


def test_dinov2_resizes_with_plain_bicubic_as_the_release_unless_asked(tmp_path):
    """The release's extraction: ``F.interpolate(x, size=(224, 224), mode='bicubic')``, i.e.
    no antialiasing; ``antialias=True`` (sfd's earlier resize) is an option."""
    reference = _save_dinov2(tmp_path, 0)
    images = torch.rand(2, 3, 256, 256) * 2 - 1  # the release's 256 px crops
    plain = torch.nn.functional.interpolate(images, size=(224, 224), mode="bicubic")
    antialiased = torch.nn.functional.interpolate(images, size=224, mode="bicubic", antialias=True)
    assert torch.equal(resize_images(images, 224, antialias=False), plain)
    assert torch.equal(resize_images(images, 224, antialias=True), antialiased)
    assert (plain - antialiased).abs().max() > 0.05
    default, aa = Dinov2Encoder(tmp_path), Dinov2Encoder(tmp_path, antialias=True)
    assert default.describe()["antialias"] is False and aa.describe()["antialias"] is True
    with torch.no_grad():
        for encoder, pixels in ((default, plain), (aa, antialiased)):
            tokens = reference(pixel_values=imagenet_normalize(pixels)).last_hidden_state[:, 1:]
            expected = tokens.transpose(1, 2).reshape(2, 32, 16, 16)
            assert torch.allclose(encoder.features(images), expected, atol=1e-5)
    assert not torch.allclose(default.features(images), aa.features(images), atol=1e-3)


def test_dinov2_rejects_other_models_and_missing_paths(tmp_path):
    from transformers import BertConfig, BertModel

    BertModel(
        BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    ).save_pretrained(tmp_path / "bert")
    with pytest.raises(ValueError, match="not a DINOv2 model"):
        Dinov2Encoder(tmp_path / "bert")
    with pytest.raises(FileNotFoundError, match="config.json"):
        Dinov2Encoder(tmp_path / "missing")
    with pytest.raises(ValueError, match="needs the path"):
        load_encoder("dinov2")
    with pytest.raises(ValueError, match="unknown encoder"):
        load_encoder("clip")


def test_a_random_encoder_is_fixed_by_its_seed_and_is_not_the_pretrained_one():
    """The ablation's negative control: the same architecture and map shape, other weights."""
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    pretrained = EfficientNetLite0Encoder(grid=8, stride=8)
    a = EfficientNetLite0Encoder(grid=8, stride=8, random_init=0)
    b = EfficientNetLite0Encoder(grid=8, stride=8, random_init=0)
    c = EfficientNetLite0Encoder(grid=8, stride=8, random_init=1)
    fp, fa, fb, fc = (m.features(x) for m in (pretrained, a, b, c))
    assert fa.shape == fp.shape == (3, 40, 8, 8)
    assert torch.equal(fa, fb) and not torch.equal(fa, fc)
    assert not torch.allclose(fa, fp, atol=1e-2)
    state = torch.random.get_rng_state()
    EfficientNetLite0Encoder(grid=8, stride=8, random_init=5)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global generator is untouched
    assert 0.05 < float(fa.std() / fp.std()) < 20  # activations keep a trained map's scale
    assert a.describe()["random_init"] == 0 and "random_init" not in pretrained.describe()
