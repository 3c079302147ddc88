"""TF1 ``resize_bilinear`` (legacy coordinates, no antialias) against closed forms."""

import pytest
import torch
import torch.nn.functional as F

from sfd.eval.inception import resize_bilinear_tf1


def test_integer_upscale_matches_hand_computed_legacy_grid():
    # Output pixel i samples source i * in/out = i / 2: 0, 0.5, 1, 1.5 (clamped to the border).
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])[None, None]
    expected = torch.tensor(
        [
            [1.0, 1.5, 2.0, 2.0],
            [2.0, 2.5, 3.0, 3.0],
            [3.0, 3.5, 4.0, 4.0],
            [3.0, 3.5, 4.0, 4.0],
        ]
    )
    torch.testing.assert_close(resize_bilinear_tf1(x, (4, 4))[0, 0], expected, rtol=0, atol=0)


def test_linear_ramp_stays_a_ramp_sampled_at_i_times_in_over_out():
    h, w = 256, 256
    ramp = 0.5 * torch.arange(w, dtype=torch.float32) + 0.25 * torch.arange(h)[:, None]
    out = resize_bilinear_tf1(ramp[None, None], (299, 299))[0, 0]
    src = torch.arange(299, dtype=torch.float64) * (256 / 299)
    src = src.clamp(max=255)  # beyond the last pixel both neighbours are the border
    expected = 0.5 * src[None, :] + 0.25 * src[:, None]
    torch.testing.assert_close(out.double(), expected, rtol=0, atol=1e-4)


def test_downscale_picks_every_other_pixel():
    x = torch.arange(64, dtype=torch.float32).reshape(1, 1, 8, 8)
    torch.testing.assert_close(resize_bilinear_tf1(x, (4, 4)), x[:, :, ::2, ::2], rtol=0, atol=0)


def test_same_size_is_identity():
    x = torch.rand(2, 3, 17, 13)
    assert torch.equal(resize_bilinear_tf1(x, (17, 13)), x)


def test_differs_from_half_pixel_and_antialiased_resizing():
    x = torch.rand(1, 3, 64, 64)
    ours = resize_bilinear_tf1(x, (299, 299))
    half_pixel = F.interpolate(x, (299, 299), mode="bilinear", align_corners=False)
    assert (ours - half_pixel).abs().max() > 0.05
    small = resize_bilinear_tf1(x, (16, 16))
    antialiased = F.interpolate(x, (16, 16), mode="bilinear", antialias=True, align_corners=False)
    assert (small - antialiased).abs().max() > 0.05


def test_rejects_integer_input():
    with pytest.raises(ValueError, match="floating"):
        resize_bilinear_tf1(torch.zeros(1, 3, 4, 4, dtype=torch.uint8), (8, 8))
