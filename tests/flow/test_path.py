"""The time convention: stretched training times and the per-part path (docs/METHOD.md §4)."""

import torch

from sfd.flow.path import interpolate, part_times, stretch
from sfd.latents.composite import LatentLayout

LAYOUT = LatentLayout(4, 2)
DELTAS = (0.0, 0.3, 1.0)


def test_training_times_and_path():
    base = torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0])
    t_tex, t_sem = stretch(base, 0.3)
    assert torch.allclose(t_sem, torch.clamp(base * 1.3, max=1))
    assert torch.allclose(t_tex, torch.clamp(base * 1.3 - 0.3, min=0))
    assert torch.equal(part_times(torch.tensor(0.0), 0.3)[0], torch.tensor(0.0))
    x0, x1 = torch.randn(5, 6, 2, 2), torch.randn(5, 6, 2, 2)
    xt = interpolate(x0, x1, torch.zeros(5), torch.ones(5), LAYOUT)
    assert torch.equal(LAYOUT.tex(xt), LAYOUT.tex(x0)) and torch.equal(
        LAYOUT.sem(xt), LAYOUT.sem(x1)
    )
