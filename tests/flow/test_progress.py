"""Schedules as monotone paths: SFD's offset member is today's time convention bit for bit, any
table gives a monotone path with fixed endpoints, each part integrates exactly its own [0, 1],
fine Euler along a learned path converges to dopri5, and a bad table is one line."""

import pytest
import torch

from sfd.config import Config, FlowConfig, ModelConfig
from sfd.errors import ConfigError
from sfd.flow.path import part_times, stretch
from sfd.flow.progress import check_table, lead_at_middle, offset_path, table_path
from sfd.flow.run_path import path_of
from sfd.flow.schedule import path_schedule, span_grid
from sfd.flow.solvers import dopri5_path, euler, solve
from sfd.latents.composite import LatentLayout

LAYOUT = LatentLayout(4, 2)
DELTAS = (0.0, 0.05, 0.3, 0.5, 0.7, 1.0, 0.123456789)


def random_table(seed: int, knots: int = 8) -> torch.Tensor:
    """A random monotone table from 0 to 1 per row (cumulative sums of random rises)."""
    g = torch.Generator().manual_seed(seed)
    rises = torch.rand(2, knots, generator=g) ** 3  # uneven, some nearly flat segments
    rows = torch.cat([torch.zeros(2, 1), rises.cumsum(1) / rises.sum(1, keepdim=True)], 1)
    rows[:, -1] = 1.0
    return rows.double()


@pytest.mark.parametrize("delta_t", DELTAS)
def test_offset_member_is_todays_time_convention_bit_for_bit(delta_t):
    path = offset_path(delta_t)
    base = torch.rand(20_000, generator=torch.Generator().manual_seed(1))
    base[:3] = torch.tensor([0.0, 0.5, 1.0])
    for got, want in zip(path.progress(base), stretch(base, delta_t), strict=True):
        assert torch.equal(got, want)  # training times
    for steps in (1, 2, 7, 13, 50):
        for shift in (0.0, 0.3, 3.0):
            tau = span_grid(steps, 1.0 + delta_t, shift)
            sched = path_schedule(steps, path, shift)
            want_tex, want_sem = part_times(tau, delta_t)
            assert torch.equal(sched.tau, tau)
            assert torch.equal(sched.t_tex, want_tex) and torch.equal(sched.t_sem, want_sem)
            assert torch.equal(sched.dt_tex, want_tex.diff())
            assert torch.equal(sched.dt_sem, want_sem.diff())
    beyond = torch.linspace(0, 2.5, 501)  # an adaptive solver's look-ahead past the end
    for got, want in zip(path.at(beyond), part_times(beyond, delta_t), strict=True):
        assert torch.equal(got, want)


def test_synchronous_member_is_the_diagonal():
    path = offset_path(0.0)
    t = torch.rand(1000, generator=torch.Generator().manual_seed(2))
    u_tex, u_sem = path.progress(t)
    assert torch.equal(u_tex, t) and torch.equal(u_sem, t)
    assert lead_at_middle(path) == 0.0


@pytest.mark.parametrize("delta_t", (0.0, 0.1, 0.3, 0.6, 1.0))
def test_lead_at_middle_of_the_offset_path_is_its_delta_t(delta_t):
    assert lead_at_middle(offset_path(delta_t)) == pytest.approx(delta_t, abs=1e-6)


@pytest.mark.parametrize("seed", range(6))
def test_any_table_gives_a_monotone_path_with_fixed_endpoints(seed):
    path = table_path(random_table(seed, knots=3 + seed))
    t = torch.linspace(0, 1, (3 + seed) * 400 + 1)  # the knots are grid points
    for u, r in zip(path.progress(t), path.rate(t), strict=True):
        assert bool((u.diff() >= 0).all()) and bool((r >= 0).all())
        assert float(u[0]) == 0.0 and float(u[-1]) == pytest.approx(1.0, abs=1e-6)
    # the table's knots are on the path, and the rate integrates to the progress
    table = random_table(seed, knots=3 + seed)
    knots = torch.linspace(0, 1, table.shape[1])
    got = torch.stack(path.progress(knots)).double()
    torch.testing.assert_close(got, table, atol=1e-6, rtol=0)
    mid = (t[1:] + t[:-1]) / 2
    for u, r in zip(path.progress(t), path.rate(mid), strict=True):
        torch.testing.assert_close(u.diff(), r * t.diff(), atol=1e-6, rtol=0)


def test_the_table_of_the_offset_path_is_its_own_path():
    table = offset_path(0.25).table(knots=5 * 8)  # kinks at t = 0.2 and 0.8 are knots
    path = table_path(table)
    t = torch.rand(500, generator=torch.Generator().manual_seed(3))
    for a, b in zip(path.progress(t), offset_path(0.25).progress(t), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "table, words",
    [
        ([[0, 0.5, 0.4, 1], [0, 0.3, 0.6, 1]], "texture row decreases at knot 2"),
        ([[0, 0.5, 1], [0, 0.6, 0.9]], "semantic row must run from 0 to 1"),
        ([[0, 0.5, 1]], "shape (2, M + 1)"),
        ([[0, float("nan"), 1], [0, 0.5, 1]], "not finite"),
    ],
)
def test_a_bad_table_is_one_line(table, words):
    with pytest.raises(ValueError) as err:
        table_path(table)
    assert words in str(err.value) and "\n" not in str(err.value)
    flat = [v for row in table for v in row]
    if len(flat) % 2 == 0:
        with pytest.raises(ConfigError, match="flow.schedule") as err:
            FlowConfig(schedule=tuple(flat))
        assert "\n" not in str(err.value)


def test_path_of_reads_the_flow_config():
    table = random_table(7, knots=4)
    flow = FlowConfig(schedule=tuple(table.flatten().tolist()))
    path = path_of(flow)
    assert path.delta_t is None and path.span == 1.0
    torch.testing.assert_close(torch.stack(path.progress(torch.linspace(0, 1, 5))).double(), table)
    assert path_of(FlowConfig(delta_t=0.2)).delta_t == 0.2


def test_each_part_integrates_exactly_its_own_unit_interval():
    g = torch.Generator().manual_seed(0)
    x1, x0 = torch.randn(2, 6, 4, 4, generator=g), torch.randn(2, 6, 4, 4, generator=g)
    constant = lambda x, t_tex, t_sem: x1 - x0  # noqa: E731 - the straight-line velocity
    path = table_path(random_table(4))
    for steps in (1, 3, 10, 37):
        sched = path_schedule(steps, path)
        assert float(sched.dt_tex.sum()) == pytest.approx(1.0, abs=1e-6)
        assert float(sched.dt_sem.sum()) == pytest.approx(1.0, abs=1e-6)
        torch.testing.assert_close(euler(constant, x0, sched, LAYOUT).final, x1, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="boundary='exact'"):
        path_schedule(10, path, boundary="release")


def curved(x, t_tex, t_sem):
    """A field that depends on both progress values and the state."""
    return LAYOUT.join(
        torch.cos(3 * t_tex + t_sem) * LAYOUT.tex(x), torch.sin(2 * t_sem - t_tex) * LAYOUT.sem(x)
    )


def test_fine_euler_along_a_learned_path_converges_to_dopri5():
    x0 = torch.randn(2, 6, 4, 4, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    path = table_path(random_table(11, knots=6))
    ref = dopri5_path(curved, x0, path, LAYOUT, atol=1e-10, rtol=1e-10).final
    errors = [
        float((euler(curved, x0, path_schedule(n, path), LAYOUT).final - ref).abs().max())
        for n in (50, 200, 800)
    ]
    assert errors[2] < 1e-2  # first order: 4x the steps, a quarter of the error
    assert 3.5 < errors[0] / errors[1] < 4.5 and 3.5 < errors[1] / errors[2] < 4.5
    via_solve = solve(curved, x0, method="dopri5", layout=LAYOUT, path=path, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(via_solve.final, ref)


def test_check_table_keeps_the_numbers():
    table = random_table(0)
    assert torch.equal(check_table(table), table) and check_table(table).dtype == torch.float64


def test_a_learned_schedule_needs_both_progress_inputs():
    table = tuple(random_table(1, knots=2).flatten().tolist())
    with pytest.raises(ConfigError, match="model.dual_timestep"):
        Config(model=ModelConfig(dual_timestep=False), flow=FlowConfig(schedule=table))
    assert Config(flow=FlowConfig(schedule=table)).flow.schedule == table
