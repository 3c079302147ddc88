"""The composite latent: named texture/semantic parts and per-channel normalisation."""

import pytest
import torch

from sfd.latents.composite import LatentLayout, LatentStats


def test_split_and_join_are_inverse():
    layout = LatentLayout(tex_channels=3, sem_channels=2)
    c = torch.randn(4, 5, 2, 2)
    z, s = layout.split(c)
    assert z.shape == (4, 3, 2, 2) and s.shape == (4, 2, 2, 2)
    assert torch.equal(layout.join(z, s), c)
    with pytest.raises(ValueError, match="5 channels"):
        layout.split(torch.randn(4, 6, 2, 2))
    with pytest.raises(ValueError, match="3 texture and 2 semantic"):
        layout.join(s, z)


def test_per_channel_places_each_value_on_its_part():
    layout = LatentLayout(2, 1)
    like = torch.zeros(1, 3, 4, 4)
    w = layout.per_channel(0.5, 2.0, like)
    assert w.shape == (1, 3, 1, 1) and w.flatten().tolist() == [0.5, 0.5, 2.0]


def test_normalize_round_trips_and_serialises():
    stats = LatentStats(torch.tensor([1.0, -2.0, 0.5]), torch.tensor([2.0, 0.5, 1.0]))
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    torch.testing.assert_close(stats.denormalize(stats.normalize(x)), x)
    assert torch.equal(LatentStats.from_dict(stats.to_dict()).mean, stats.mean)
    assert torch.equal(LatentStats.identity(3).normalize(x), x)
    with pytest.raises(ValueError, match="std must be > 0"):
        LatentStats(torch.zeros(2), torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="3 channels but the statistics have 2"):
        LatentStats.identity(2).normalize(torch.zeros(1, 3, 1, 1))
