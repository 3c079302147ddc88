"""The linear probe separates what is linearly separable, and ignores the features' scale."""

import torch

from sfd.eval.linear_probe import train_probe


def _blobs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    centres = torch.tensor([[4.0, 0.0, 0.0, 0.0], [0.0, 4.0, 0.0, 0.0], [0.0, 0.0, 4.0, 0.0]])
    return centres[labels] + 0.3 * torch.randn(n, 4, generator=g), labels


def test_separable_classes_are_told_apart_on_held_out_points():
    x, y = _blobs(60, seed=0)
    probe = train_probe(x, y, classes=3)
    test_x, test_y = _blobs(90, seed=1)
    assert torch.equal(probe(test_x), test_y)


def test_the_probe_standardises_so_a_feature_scale_changes_nothing():
    x, y = _blobs(60, seed=0)
    test_x, _ = _blobs(30, seed=2)
    scale = torch.tensor([1e3, 1e-3, 5.0, 1.0])
    a = train_probe(x, y, classes=3)(test_x)
    b = train_probe(x * scale, y, classes=3)(test_x * scale)
    assert torch.equal(a, b)
