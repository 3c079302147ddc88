"""The FID Inception port: published state-dict layout, strict loading, feature taps."""

import pytest
import torch

from sfd.eval.inception import FIDInceptionV3, load_inception

from .helpers import random_images

# From toshas/torch-fidelity utils/util_convert_inception_weights.py (the TF graph -> torch map
# that produces weights-inception-2015-12-05-6726825d.pth, the same file as pytorch-fid's
# pt_inception-2015-12-05-6726825d.pth): 94 conv+batchnorm pairs (conv weight; bn weight, bias,
# running_mean, running_var) plus fc weight and bias, and no num_batches_tracked buffers.
PUBLISHED_NUM_KEYS = 94 * 5 + 2
PUBLISHED_NUM_ELEMENTS = 23_885_392  # all tensors of the file, fc and BN running stats included
PUBLISHED_SHAPES = {
    "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),  # TF conv/conv2d_params
    "Conv2d_1a_3x3.bn.running_var": (32,),
    "Conv2d_2b_3x3.conv.weight": (64, 32, 3, 3),
    "Conv2d_3b_1x1.conv.weight": (80, 64, 1, 1),
    "Conv2d_4a_3x3.conv.weight": (192, 80, 3, 3),
    "Mixed_5b.branch1x1.conv.weight": (64, 192, 1, 1),  # TF mixed/conv
    "Mixed_5b.branch5x5_2.conv.weight": (64, 48, 5, 5),
    "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
    "Mixed_5d.branch_pool.bn.bias": (64,),
    "Mixed_6a.branch3x3.conv.weight": (384, 288, 3, 3),  # TF mixed_3/conv
    "Mixed_6b.branch7x7_2.conv.weight": (128, 128, 1, 7),
    "Mixed_6d.branch1x1.conv.weight": (192, 768, 1, 1),  # TF mixed_6/conv (sFID tap)
    "Mixed_6e.branch7x7dbl_5.conv.weight": (192, 192, 1, 7),
    "Mixed_7a.branch3x3_2.conv.weight": (320, 192, 3, 3),
    "Mixed_7a.branch7x7x3_4.conv.weight": (192, 192, 3, 3),
    "Mixed_7b.branch3x3_2b.conv.weight": (384, 384, 3, 1),  # TF mixed_9/tower/mixed/conv_1
    "Mixed_7c.branch3x3dbl_1.conv.weight": (448, 2048, 1, 1),
    "Mixed_7c.branch_pool.conv.weight": (192, 2048, 1, 1),
    "fc.weight": (1008, 2048),  # TF softmax/weights, transposed
    "fc.bias": (1008,),
}


def published_like_state_dict(net: FIDInceptionV3) -> dict:
    """The state dict as the published file stores it (no num_batches_tracked)."""
    return {k: v for k, v in net.state_dict().items() if "num_batches_tracked" not in k}


def test_state_dict_matches_published_layout():
    with torch.device("meta"):  # shapes only
        state = published_like_state_dict(FIDInceptionV3())
    assert len(state) == PUBLISHED_NUM_KEYS
    assert sum(v.numel() for v in state.values()) == PUBLISHED_NUM_ELEMENTS
    for key, shape in PUBLISHED_SHAPES.items():
        assert tuple(state[key].shape) == shape, key
    assert not any("Aux" in k for k in state)


def test_load_is_strict_and_round_trips(tmp_path, inception):
    net = inception
    path = tmp_path / "pt_inception.pth"
    torch.save(published_like_state_dict(net), path)
    loaded = load_inception(path)
    for key, value in net.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    torch.save(net.state_dict(), path)  # num_batches_tracked present is fine too
    load_inception(path)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: s.pop("Mixed_6d.branch1x1.conv.weight"), "missing"),
        (lambda s: s.update({"AuxLogits.fc.weight": torch.zeros(1000, 768)}), "unexpected"),
        (lambda s: s.update({"fc.weight": torch.zeros(1000, 2048)}), "wrong shapes"),
    ],
)
def test_load_rejects_other_layouts(tmp_path, inception, edit, message):
    state = published_like_state_dict(inception)
    edit(state)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=message) as err:
        load_inception(path)
    assert "bad.pth" in str(err.value)


def test_load_rejects_missing_or_unreadable_file(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_inception(tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pth is not a readable"):
        load_inception(tmp_path / "junk.pth")


def test_preprocess_accepts_nhwc_and_nchw(inception):
    images = torch.from_numpy(random_images(2, size=40))
    nhwc = inception.preprocess(images)
    torch.testing.assert_close(nhwc, inception.preprocess(images.permute(0, 3, 1, 2)))
    assert nhwc.shape == (2, 3, 299, 299) and nhwc.min() >= -1 and nhwc.max() < 1


def test_features_taps_and_unbiased_logits(inception):
    images = torch.from_numpy(random_images(2, size=40))
    taps = {}
    hooks = [
        inception.Mixed_6d.branch1x1.register_forward_hook(lambda m, i, o: taps.update(conv=o)),
        inception.Mixed_7c.register_forward_hook(lambda m, i, o: taps.update(last=o)),
    ]
    try:
        out = inception(images)
    finally:
        for hook in hooks:
            hook.remove()
    assert out.pool3.shape == (2, 2048) and out.spatial.shape == (2, 2023)
    # mixed_6/conv:0[..., :7] flattened in TF's NHWC order.
    assert taps["conv"].shape == (2, 192, 17, 17)
    expected = taps["conv"][:, :7].permute(0, 2, 3, 1).reshape(2, -1)
    torch.testing.assert_close(out.spatial, expected)
    torch.testing.assert_close(out.pool3, taps["last"].mean(dim=(2, 3)))
    assert out.pool3.std() > 1e-3  # the random network's features are not degenerate
    logits = inception.logits(out.pool3)
    torch.testing.assert_close(logits, out.pool3 @ inception.fc.weight.T)  # ADM: no bias


def test_rejects_non_uint8_images(inception):
    with pytest.raises(ValueError, match="uint8"):
        inception(torch.zeros(1, 3, 32, 32))
