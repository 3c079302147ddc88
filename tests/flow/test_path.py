"""The time convention: stretched training times and the per-part path (docs/METHOD.md §4).

Properties, not the formula again: the endpoints, monotonicity, the constant offset Δt between
the parts while neither is clamped, closed forms at known points, and the path's endpoints,
linearity and velocity."""

import pytest
import torch

from sfd.flow.path import interpolate, part_times, stretch, velocity_target
from sfd.latents.composite import LatentLayout

LAYOUT = LatentLayout(4, 2)
DELTAS = (0.0, 0.3, 1.0)
U = torch.linspace(0, 1, 1001)


@pytest.mark.parametrize("delta", DELTAS)
def test_stretched_times_start_at_noise_and_end_at_data(delta):
    t_tex, t_sem = stretch(torch.tensor([0.0, 1.0]), delta)
    assert t_sem.tolist() == [0.0, 1.0] and t_tex[0].item() == 0.0
    # u (1 + Δt) - Δt in float32, as the release computes it: 1 to within one rounding
    assert t_tex[1].item() == pytest.approx(1.0, abs=2e-7)
    assert t_tex.dtype == t_sem.dtype == torch.float32


@pytest.mark.parametrize("delta", DELTAS)
def test_stretched_times_are_monotone_in_0_1_and_semantics_lead(delta):
    t_tex, t_sem = stretch(U, delta)
    for t in (t_tex, t_sem):
        assert (t.diff() >= 0).all() and t.min() >= 0 and t.max() <= 1
    assert (t_sem >= t_tex).all()


@pytest.mark.parametrize("delta", DELTAS)
def test_the_parts_are_delta_apart_while_neither_is_clamped(delta):
    t_tex, t_sem = stretch(U, delta)
    free = (t_tex > 0) & (t_sem < 1)
    assert free.any() or delta == 1.0  # at Δt = 1 one part is always clamped
    assert torch.allclose(t_sem[free] - t_tex[free], torch.full_like(t_sem[free], delta), atol=1e-6)
    # texture is pure noise up to u = Δt / (1 + Δt), semantics are data from u = 1 / (1 + Δt)
    noise_until, data_from = delta / (1 + delta), 1 / (1 + delta)
    assert (t_tex[noise_until - 1e-6 >= U] == 0).all() and (t_tex[noise_until + 1e-6 < U] > 0).all()
    assert (t_sem[data_from + 1e-6 <= U] == 1).all() and (t_sem[data_from - 1e-6 > U] < 1).all()


def test_closed_forms_at_known_points():
    t_tex, t_sem = stretch(torch.tensor([0.5, 1 / 1.3, 0.2]), 0.3)
    assert torch.allclose(t_tex, torch.tensor([0.35, 0.7, 0.0]), atol=1e-6)
    assert torch.allclose(t_sem, torch.tensor([0.65, 1.0, 0.26]), atol=1e-6)
    same = stretch(U, 0.0)  # no offset: both parts at the base time
    assert torch.equal(same[0], U) and torch.equal(same[1], U)
    half = stretch(torch.tensor([0.5]), 1.0)  # Δt = 1 at the middle: noise and data
    assert half[0].item() == 0.0 and half[1].item() == 1.0
    assert part_times(torch.tensor(1.15), 0.3) == (pytest.approx(0.85), pytest.approx(1.0))


def test_the_path_runs_from_noise_to_data_per_part_and_is_linear():
    g = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(5, 6, 2, 2, generator=g), torch.randn(5, 6, 2, 2, generator=g)
    zeros, ones = torch.zeros(5), torch.ones(5)
    assert torch.equal(interpolate(x0, x1, zeros, zeros, LAYOUT), x0)
    assert torch.equal(interpolate(x0, x1, ones, ones, LAYOUT), x1)
    mixed = interpolate(x0, x1, zeros, ones, LAYOUT)  # texture noise, semantics data
    assert torch.equal(LAYOUT.tex(mixed), LAYOUT.tex(x0))
    assert torch.equal(LAYOUT.sem(mixed), LAYOUT.sem(x1))
    t = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])
    mid = interpolate(x0, x1, t, t, LAYOUT)
    assert torch.allclose(mid, (x0 + x1) / 2 + (t - 0.5).view(-1, 1, 1, 1) * (x1 - x0), atol=1e-6)
    # a constant velocity along the path: a finite difference is the velocity target
    h = 1e-2
    step = interpolate(x0, x1, t * 0.5 + h, t * 0.5 + h, LAYOUT)
    base = interpolate(x0, x1, t * 0.5, t * 0.5, LAYOUT)
    assert torch.allclose((step - base) / h, velocity_target(x0, x1), atol=1e-3)


def test_mismatched_noise_and_data_are_refused():
    with pytest.raises(ValueError, match="noise x0"):
        interpolate(
            torch.zeros(1, 6, 2, 2), torch.zeros(1, 6, 3, 3), torch.zeros(1), torch.zeros(1), LAYOUT
        )
