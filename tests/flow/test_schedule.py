import math

import pytest
import torch

from sfd.flow.path import interpolate, part_times, stretch
from sfd.flow.schedule import staged_schedule, tau_grid
from sfd.flow.solvers import dopri5, euler, heun
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


def oracle(x1: torch.Tensor):
    """The exact velocity toward known data x1: (x1 - x) / (1 - t) per part (0 once t = 1)."""

    def velocity(x, t_tex, t_sem):
        def part(xp, x1p, t):
            return (x1p - xp) / (1 - t) if float(t) < 1 else torch.zeros_like(xp)

        return LAYOUT.join(
            part(LAYOUT.tex(x), LAYOUT.tex(x1), t_tex), part(LAYOUT.sem(x), LAYOUT.sem(x1), t_sem)
        )

    return velocity


@pytest.mark.parametrize("delta_t", DELTAS)
def test_oracle_lands_on_the_data(delta_t):
    g = torch.Generator().manual_seed(0)
    x1, x0 = torch.randn(2, 6, 4, 4, generator=g), torch.randn(2, 6, 4, 4, generator=g)
    constant = lambda x, t_tex, t_sem: x1 - x0  # noqa: E731 - the straight-line velocity
    for steps in range(1, 41):
        s = staged_schedule(steps, delta_t)
        # Euler never evaluates a part at t = 1 where it still moves, so the state-based oracle
        # is defined at every evaluation; Heun's corrector is, so it gets the constant field.
        torch.testing.assert_close(euler(oracle(x1), x0, s, LAYOUT).final, x1, atol=1e-5, rtol=0)
        for solver in (euler, heun):
            torch.testing.assert_close(solver(constant, x0, s, LAYOUT).final, x1, atol=1e-5, rtol=0)


def curved(x, t_tex, t_sem):
    """dx/dt = cos(3 t) x per part: x(1) = x(0) exp(sin(3) / 3)."""
    return LAYOUT.join(torch.cos(3 * t_tex) * LAYOUT.tex(x), torch.cos(3 * t_sem) * LAYOUT.sem(x))


def test_heun_is_second_order_and_euler_first_order():
    x0 = torch.ones(1, 6, 1, 1, dtype=torch.float64)
    exact = x0 * math.exp(math.sin(3.0) / 3)
    for solver, lo, hi in ((heun, 1.8, 2.7), (euler, 0.8, 1.3)):
        errs = [
            (solver(curved, x0, staged_schedule(n, 0.3), LAYOUT).final - exact).abs().max()
            for n in (40, 80, 160)
        ]
        orders = [math.log2(errs[i] / errs[i + 1]) for i in range(2)]
        assert all(lo < p < hi for p in orders), (solver.__name__, orders)


@pytest.mark.parametrize("delta_t", DELTAS)
def test_dopri5_solves_the_curved_ode(delta_t):
    x0 = torch.ones(1, 6, 1, 1, dtype=torch.float64)
    exact = x0 * math.exp(math.sin(3.0) / 3)
    sol = dopri5(curved, x0, delta_t, LAYOUT, atol=1e-7, rtol=1e-7)
    torch.testing.assert_close(sol.final, exact, atol=1e-6, rtol=0)
    # integrating straight across the stage jumps (the release) is less accurate per NFE
    rel = dopri5(curved, x0, delta_t, LAYOUT, atol=1e-7, rtol=1e-7, boundary="release")
    assert (rel.final - exact).abs().max() > (sol.final - exact).abs().max()
    assert rel.nfe >= sol.nfe


def test_trajectory_starts_at_noise():
    x0 = torch.randn(1, 6, 2, 2)
    sol = euler(lambda x, a, b: torch.ones_like(x), x0, staged_schedule(5, 0.3), LAYOUT, True)
    assert len(sol.trajectory) == 6 and torch.equal(sol.trajectory[0], x0)
    assert sol.nfe == 5
