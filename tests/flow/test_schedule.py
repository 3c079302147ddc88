import pytest
import torch

from sfd.flow.schedule import staged_schedule, tau_grid
from sfd.latents.composite import LatentLayout

LAYOUT = LatentLayout(4, 2)
DELTAS = (0.0, 0.3, 1.0)


@pytest.mark.parametrize("delta_t", DELTAS)
@pytest.mark.parametrize("boundary", ["exact", "release"])
def test_schedule_properties(delta_t, boundary):
    for steps in (1, 2, 7, 13, 50):
        s = staged_schedule(steps, delta_t, boundary=boundary)
        assert s.tau[0] == 0 and torch.isclose(s.tau[-1], torch.tensor(1 + delta_t))
        assert bool((s.tau.diff() > 0).all())
        assert bool((s.t_sem.diff() >= 0).all()) and bool((s.t_tex.diff() >= 0).all())
        gap = s.t_sem - s.t_tex
        assert bool((gap >= -1e-7).all()) and bool((gap <= delta_t + 1e-6).all())
        stages = [s.stage(k) for k in range(steps)]
        order = {"I": 0, "II": 1, "III": 2}
        assert [order[x] for x in stages] == sorted(order[x] for x in stages)
        if delta_t == 0:
            assert set(stages) == {"II"}


def test_delta_zero_is_the_synchronous_grid():
    s = staged_schedule(10, 0.0)
    assert torch.equal(s.tau, torch.linspace(0, 1, 11))
    assert torch.equal(s.t_tex, s.t_sem) and torch.equal(s.t_sem, s.tau)
    assert torch.equal(s.dt_tex, s.dt_sem)


def test_delta_one_is_serial():
    s = staged_schedule(20, 1.0)
    for k in range(20):
        assert not (s.dt_tex[k] > 0 and s.dt_sem[k] > 0)


def test_exact_rule_moves_each_part_over_unit_time():
    for steps in (3, 7, 13, 29):
        s = staged_schedule(steps, 0.3)
        assert torch.isclose(s.dt_tex.sum(), torch.tensor(1.0), atol=1e-6)
        assert torch.isclose(s.dt_sem.sum(), torch.tensor(1.0), atol=1e-6)


def test_release_rule_float32_boundary():
    # fixture README: with 14 points the float32 linspace puts tau_3 just below 0.3 and
    # tau_10 at exactly 1.0, so texture takes 9 steps and semantics 11.
    s = staged_schedule(13, 0.3, boundary="release")
    assert int((s.dt_tex > 0).sum()) == 9 and int((s.dt_sem > 0).sum()) == 11


def test_timestep_shift_keeps_endpoints_and_compresses():
    g = tau_grid(10, 0.3, shift=0.3)
    assert g[0] == 0 and torch.isclose(g[-1], torch.tensor(1.3))
    assert bool((g[1:-1] < tau_grid(10, 0.3)[1:-1]).all())
