"""Solvers on the staged schedule: an oracle lands exactly on the data for any step count and
Δt (the time convention's oracle, docs/METHOD.md §1), Heun is second order and Euler first,
dopri5 across the stage jumps."""

import math

import pytest
import torch

from sfd.flow import solvers
from sfd.flow.schedule import staged_schedule
from sfd.flow.solvers import SOLVERS, dopri5, euler, heun, solve
from sfd.latents.composite import LatentLayout

LAYOUT = LatentLayout(4, 2)
DELTAS = (0.0, 0.3, 1.0)


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


def counting(field):
    """``field`` and a list that grows by one per velocity evaluation."""
    calls = []

    def velocity(x, t_tex, t_sem):
        calls.append(1)
        return field(x, t_tex, t_sem)

    return velocity, calls


@pytest.mark.parametrize("name", list(SOLVERS))
def test_every_registered_solver_runs_through_solve_and_keeps_its_nfe_rule(name):
    spec = SOLVERS[name]
    assert callable(spec.function) and solvers.solver(name) is spec
    x0 = torch.ones(1, 6, 1, 1, dtype=torch.float64)
    exact = x0 * math.exp(math.sin(3.0) / 3)
    for steps in (20, 40):
        velocity, calls = counting(curved)
        sol = solve(velocity, x0, method=name, layout=LAYOUT, schedule=staged_schedule(steps, 0.3))
        assert sol.nfe == len(calls)  # what a Solution reports is what the solver called
        if spec.fixed_step:
            assert spec.nfe(steps) == len(calls) == spec.evaluations_per_step * steps
        else:
            assert spec.nfe(steps) is None and len(calls) > 0  # adaptive: counted while solving
        assert (sol.final - exact).abs().max() < 0.06  # it solves the ODE, not just runs


def test_only_dopri5_integrates_across_the_boundary_jumps():
    assert {n for n, s in SOLVERS.items() if s.boundary_jumps} == {"dopri5"}
    assert {n for n, s in SOLVERS.items() if not s.fixed_step} == {"dopri5"}
    # the boundary rule reaches a jump-aware solver itself; a fixed-step one reads it from the
    # schedule's rows, so solve's ``boundary`` argument changes nothing for it
    x0 = torch.ones(1, 6, 1, 1, dtype=torch.float64)
    schedule = staged_schedule(10, 0.3)
    for name, spec in SOLVERS.items():
        exact, release = (
            solve(curved, x0, method=name, layout=LAYOUT, schedule=schedule, boundary=rule).final
            for rule in ("exact", "release")
        )
        assert torch.equal(exact, release) != spec.boundary_jumps, name


def test_an_unknown_solver_is_one_error_listing_the_known_ones():
    x0 = torch.ones(1, 6, 1, 1)
    for call in (
        lambda: solvers.solver("rk4"),
        lambda: solve(curved, x0, method="rk4", layout=LAYOUT, schedule=staged_schedule(2, 0.3)),
    ):
        with pytest.raises(ValueError, match="unknown solver 'rk4'") as err:
            call()
        assert all(name in str(err.value) for name in SOLVERS)
