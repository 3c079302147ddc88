"""The schedule probe: the corrected loss weights each part's own noise levels uniformly whatever
the path (closed form), the gradient reaches the schedule, a quick probe writes a monotone
schedule and its picture, and bad input (no semantic channels, a bad schedule file) is one line
with nothing written."""

import dataclasses
import json

import pytest
import torch
from torch import nn

from sfd.config import Config
from sfd.errors import BadInputError, MismatchError
from sfd.flow.progress import offset_path, table_path
from sfd.latents.composite import LatentLayout
from sfd.model import LightningDiT
from sfd.training.probe import (
    ProbeSettings,
    ScheduleParams,
    learn_schedule,
    noise_level_weights,
    probe_loss,
)
from sfd.training.schedule_file import load_schedule, save_schedule, with_schedule_file
from tests.helpers import tiny_config, write_synthetic_latents

LAYOUT = LatentLayout(4, 2)


def random_params(seed: int, knots: int = 8, scale: float = 2.0) -> ScheduleParams:
    params = ScheduleParams(knots)
    with torch.no_grad():
        params.logits.copy_(
            scale * torch.randn(2, knots, generator=torch.Generator().manual_seed(seed))
        )
    return params


@pytest.mark.parametrize("seed", range(4))
def test_schedule_params_give_a_monotone_path_with_fixed_endpoints(seed):
    params = random_params(seed, knots=3 + 2 * seed, scale=6.0)  # some rises ~ e^-12
    table = params.table()
    assert bool((table.diff(dim=-1) >= 0).all())
    assert torch.equal(table[:, 0], torch.zeros(2)) and torch.equal(table[:, -1], torch.ones(2))
    assert (
        ScheduleParams(8, init_delta_t=0.0).table().allclose(torch.linspace(0, 1, 9).expand(2, 9))
    )


class OneMinusX(nn.Module):
    """A synthetic denoiser: f = 1 - x, so with noise 0 and data 1 (x_t = u) the squared error
    of part k is u_k^2, whose mean over uniform noise levels is exactly 1/3."""

    def forward(self, x, *, t_tex, t_sem, y):
        return 1 - x


@pytest.mark.parametrize("seed", range(5))
def test_corrected_loss_weights_each_parts_noise_levels_uniformly(seed):
    path = random_params(seed).path()
    n = 20_000
    t = (torch.arange(n, dtype=torch.float32) + 0.5) / n  # t ~ U[0, 1] as a midpoint rule
    ones = torch.ones(n, 6, 1, 1)

    def flow(sem_weight: float) -> float:
        with torch.no_grad():
            terms = probe_loss(
                OneMinusX(), ones, None, x0=0 * ones, t=t, path=path, layout=LAYOUT,
                sem_weight=sem_weight, lam=0.0,
            )  # fmt: skip
        return float(terms.flow.mean())

    assert flow(0.0) == pytest.approx(1 / 3, abs=2e-4)  # texture alone
    assert flow(1.0) == pytest.approx(2 / 3, abs=4e-4)
    weights = noise_level_weights(path, bins=10)
    torch.testing.assert_close(
        weights, torch.full((2, 10), 0.1, dtype=torch.float64), atol=2e-3, rtol=0
    )
    # without the correction the weighting follows the path: not uniform for this one
    u_tex, _ = path.progress(t)
    u_tex = u_tex.detach()
    assert abs(float((u_tex**2).mean()) - 1 / 3) > 5e-3


def test_the_gradient_reaches_the_schedule():
    cfg = tiny_config()
    model = LightningDiT.from_configs(cfg.model, cfg.latent)
    with torch.no_grad():  # adaLN-zero starts at f = 0, blind to its inputs: leave that point
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    params = random_params(0, scale=0.5)
    g = torch.Generator().manual_seed(0)
    x1, x0 = torch.randn(2, 8, 6, 8, 8, generator=g)
    terms = probe_loss(
        model,
        x1,
        torch.arange(8) % 10,
        x0=x0,
        t=torch.rand(8, generator=g),
        path=params.path(),
        layout=LAYOUT,
        lam=0.1,
    )
    terms.total().backward()
    grad = params.logits.grad
    assert grad is not None and bool(torch.isfinite(grad).all())
    assert float(grad[0].abs().sum()) > 0 and float(grad[1].abs().sum()) > 0
    # the flow term alone reaches it too (through the noisy inputs and the progress values)
    params.logits.grad = None
    probe_loss(
        model,
        x1,
        torch.arange(8) % 10,
        x0=x0,
        t=torch.rand(8, generator=g),
        path=params.path(),
        layout=LAYOUT,
        lam=0.0,
    ).total().backward()
    assert float(params.logits.grad.abs().sum()) > 0


@pytest.fixture(scope="module")
def latents(tmp_path_factory):
    return write_synthetic_latents(
        tmp_path_factory.mktemp("lat"), tiny_config(), count=24, repa=False
    )


def test_quick_probe_writes_a_schedule_and_its_picture(latents, tmp_path):
    settings = ProbeSettings(steps=12, batch=8, knots=4, width=32, depth=1, log_every=4)
    out = tmp_path / "sched" / "schedule.json"
    doc = learn_schedule(latents, out, settings)
    assert (tmp_path / "sched" / "schedule.png").stat().st_size > 0
    table = load_schedule(out)
    assert table.shape == (2, 5) and bool((table.diff(dim=-1) >= 0).all())
    assert doc["probe"]["settings"]["steps"] == 12 and doc["probe"]["seconds"] > 0
    assert -1 <= doc["lead_at_middle"] <= 1
    # warmup: the schedule moved only after the first quarter; it did move
    assert not torch.allclose(table, torch.linspace(0, 1, 5, dtype=torch.float64).expand(2, 5))
    before = out.read_bytes()
    with pytest.raises(BadInputError, match="exists"):
        learn_schedule(latents, out, settings)
    assert out.read_bytes() == before
    # a run configured with the file carries its numbers
    cfg = dataclasses.replace(
        tiny_config(), flow=dataclasses.replace(tiny_config().flow, schedule_file=str(out))
    )
    flow = with_schedule_file(cfg).flow
    assert flow.schedule == tuple(table.flatten().tolist())
    sfd_table = tuple(offset_path(0.3).table(4).flatten().tolist())
    other = dataclasses.replace(flow, schedule=sfd_table)
    with pytest.raises(MismatchError, match="set only one"):
        with_schedule_file(dataclasses.replace(cfg, flow=other))


def test_probe_on_data_without_semantic_channels_is_one_line(tmp_path):
    base = tiny_config()
    cfg = Config(
        model=base.model,
        latent=dataclasses.replace(base.latent, sem_channels=0),
        flow=dataclasses.replace(base.flow, delta_t=0.0),
        train=base.train,
    )
    data = write_synthetic_latents(tmp_path / "lat", cfg, count=12, repa=False)
    out = tmp_path / "out" / "schedule.json"
    with pytest.raises(BadInputError, match="no semantic channels") as err:
        learn_schedule(data, out, ProbeSettings(steps=2, batch=4))
    assert "\n" not in str(err.value) and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "doc, words",
    [
        (
            {"format": "sfd-schedule/1", "progress": {"tex": [0, 1], "sem": [0, 0.5, 1]}},
            "same length",
        ),
        ({"format": "sfd-schedule/1", "progress": {"tex": [[0, 1]], "sem": [[0, 1]]}}, "shape"),
        (
            {
                "format": "sfd-schedule/1",
                "progress": {"tex": [0, 0.6, 0.5, 1], "sem": [0, 0.2, 0.5, 1]},
            },
            "decreases",
        ),
        ({"format": "other"}, "format"),
        ([1, 2], "format"),
    ],
)
def test_a_bad_schedule_file_is_one_line(tmp_path, doc, words):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(BadInputError, match=words) as err:
        load_schedule(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_save_refuses_to_overwrite_and_round_trips(tmp_path):
    table = offset_path(0.3).table(13)
    path = save_schedule(tmp_path / "s.json", table)
    torch.testing.assert_close(load_schedule(path), table, atol=0, rtol=0)
    assert json.loads(path.read_text())["lead_at_middle"] == pytest.approx(0.3, abs=1e-6)
    with pytest.raises(BadInputError, match="exists"):
        save_schedule(path, table)
    assert table_path(load_schedule(path)).delta_t is None


@pytest.mark.parametrize("seed", range(3))
def test_semantics_first_order_never_lets_texture_lead(seed):
    params = ScheduleParams(6, order="semantics-first")
    with torch.no_grad():
        params.logits.copy_(3 * torch.randn(2, 6, generator=torch.Generator().manual_seed(seed)))
    u_tex, u_sem = params.path().progress(torch.linspace(0, 1, 601))
    assert bool((u_tex <= u_sem + 1e-6).all()) and bool((u_tex.diff() >= 0).all())
    free = ScheduleParams(6)
    with torch.no_grad():
        free.logits.copy_(params.logits)
    f_tex, f_sem = free.path().progress(torch.linspace(0, 1, 601))
    assert torch.equal(f_sem, u_sem)  # the semantic curve is the free one
    with pytest.raises(ValueError, match="order"):
        ScheduleParams(4, order="texture-first")
