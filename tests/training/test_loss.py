import dataclasses

import pytest
import torch

from sfd.config import FlowConfig, preset
from sfd.flow.path import interpolate, stretch
from sfd.latents.composite import LatentLayout
from sfd.model import LightningDiT
from sfd.training.loss import flow_loss, repa_loss

LAYOUT = LatentLayout(4, 2)


class Constant(torch.nn.Module):
    """Predicts a fixed velocity, so loss terms have closed forms."""

    def __init__(self, v):
        super().__init__()
        self.v = v

    def forward(self, x, *, t_tex, t_sem, y, return_repa=False):
        return self.v.expand_as(x)


def test_beta_weighting_closed_form():
    x1, x0 = torch.zeros(2, 6, 2, 2), torch.zeros(2, 6, 2, 2)
    v = torch.zeros(1, 6, 1, 1)
    v[:, 4:] = 1.0  # error only on the 2 semantic channels
    terms = flow_loss(
        Constant(v),
        x1,
        torch.zeros(2, dtype=torch.long),
        x0=x0,
        base_time=torch.full((2,), 0.5),
        flow=FlowConfig(sem_weight=2.0),
        layout=LAYOUT,
    )
    # (Σ_tex + β Σ_sem) / (C H W) = (0 + 2 * 2*4) / 24
    torch.testing.assert_close(terms.vel, torch.full((2,), 16 / 24))


def _terms_with_error_on(part: str, mask: bool, base: torch.Tensor):
    """Loss terms of a model off by 1 on one part only, for x1 = x0 = 0 (target 0)."""
    v = LAYOUT.join(
        torch.full((1, LAYOUT.tex_channels, 1, 1), float(part == "tex")),
        torch.full((1, LAYOUT.sem_channels, 1, 1), float(part == "sem")),
    )
    zeros = torch.zeros(len(base), LAYOUT.channels, 2, 2)
    return flow_loss(
        Constant(v),
        zeros,
        torch.zeros(len(base), dtype=torch.long),
        x0=zeros,
        base_time=base,
        flow=FlowConfig(delta_t=0.3, sem_weight=2.0, mask_clamped=mask),
        layout=LAYOUT,
    )


def test_mask_clamped_drops_only_the_clamped_semantic_target():
    # item 0: tau = 1.3 (t_sem clamped to 1); item 1: tau = 0.13 < Δt (t_tex clamped to 0);
    # item 2: both parts moving
    base = torch.tensor([1.0, 0.1, 0.5])
    ref = _terms_with_error_on("tex", False, base)
    assert ref.t_sem[0] == 1 and ref.t_tex[1] == 0 and 0 < ref.t_tex[2] < ref.t_sem[2] < 1
    c, c_z, c_s = LAYOUT.channels, LAYOUT.tex_channels, LAYOUT.sem_channels
    # texture: kept everywhere, also at t_tex = 0 (the model sees z0, z1 - z0 is learnable)
    tex = _terms_with_error_on("tex", True, base).vel
    torch.testing.assert_close(tex, torch.full((3,), c_z / c))
    torch.testing.assert_close(tex, ref.vel)
    # semantics: dropped where t_sem is clamped to 1, kept (β-weighted) elsewhere
    sem = _terms_with_error_on("sem", True, base).vel
    torch.testing.assert_close(sem, torch.tensor([0.0, 2.0 * c_s / c, 2.0 * c_s / c]))
    # off (the release): nothing is masked
    torch.testing.assert_close(
        _terms_with_error_on("sem", False, base).vel, torch.full((3,), 2.0 * c_s / c)
    )


def test_repa_modes_and_shape_error():
    proj = torch.randn(2, 4, 8)
    feats = proj.transpose(1, 2).reshape(2, 8, 2, 2)
    assert torch.allclose(repa_loss(proj, feats, "cos"), torch.zeros(2), atol=1e-6)
    assert torch.allclose(repa_loss(proj, -feats, "cos"), torch.full((2,), 2.0), atol=1e-6)
    assert torch.equal(repa_loss(proj, feats, "mse"), torch.zeros(2))
    with pytest.raises(ValueError, match="REPA target tokens"):
        repa_loss(proj, torch.zeros(2, 7, 2, 2), "cos")


def test_loss_decreases_on_a_fixed_batch():
    cfg = preset("tiny")
    torch.manual_seed(0)
    model = LightningDiT.from_configs(cfg.model, cfg.latent)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn(8, 6, 8, 8, generator=g)
    x0 = torch.randn(8, 6, 8, 8, generator=g)
    y = torch.arange(8) % 10
    base = torch.rand(8, generator=g)
    repa = torch.randn(8, cfg.model.repa_dim, 8, 8, generator=g)
    flow = dataclasses.replace(cfg.flow)
    losses = []
    for _ in range(25):
        terms = flow_loss(
            model,
            x1,
            y,
            x0=x0,
            base_time=base,
            flow=flow,
            layout=LatentLayout(4, 2),
            repa_target=repa,
        )
        loss = terms.total()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses[::8]


def test_repa_target_is_pooled_onto_a_coarser_token_grid():
    """Patch size 2: each token is compared with the mean feature of the 2x2 cells it covers."""
    gen = torch.Generator().manual_seed(0)
    proj = torch.randn(2, 16, 5, generator=gen)  # 4x4 tokens
    fine = torch.randn(2, 5, 8, 8, generator=gen)
    pooled = fine.reshape(2, 5, 4, 2, 4, 2).mean(dim=(3, 5))
    for mode in ("cos", "mse", "cos_mse"):
        torch.testing.assert_close(repa_loss(proj, fine, mode), repa_loss(proj, pooled, mode))
    with pytest.raises(ValueError, match="do not match"):
        repa_loss(proj, torch.randn(2, 5, 6, 6), "cos")  # 6 is not a multiple of 4


@pytest.mark.parametrize("delta_t", [0.0, 0.3, 0.7])
def test_the_offset_schedule_trains_on_todays_times_and_states_bit_for_bit(delta_t):
    g = torch.Generator().manual_seed(3)
    x1, x0 = torch.randn(2, 64, 6, 4, 4, generator=g)
    base = torch.rand(64, generator=g)
    terms = flow_loss(
        Constant(torch.zeros(1, 6, 1, 1)),
        x1,
        torch.zeros(64, dtype=torch.long),
        x0=x0,
        base_time=base,
        flow=FlowConfig(delta_t=delta_t),
        layout=LAYOUT,
    )
    t_tex, t_sem = stretch(base, delta_t)  # the time convention before schedules were paths
    assert torch.equal(terms.t_tex, t_tex) and torch.equal(terms.t_sem, t_sem)
    assert torch.equal(terms.x_t, interpolate(x0, x1, t_tex, t_sem, LAYOUT))


def test_a_learned_schedule_sets_the_training_times():
    table = ((0.0, 0.5, 1.0), (0.0, 0.2, 1.0))
    flow = FlowConfig(schedule=table[0] + table[1])
    base = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])
    x = torch.zeros(5, 6, 2, 2)
    terms = flow_loss(
        Constant(torch.zeros(1, 6, 1, 1)),
        x,
        torch.zeros(5, dtype=torch.long),
        x0=x,
        base_time=base,
        flow=flow,
        layout=LAYOUT,
    )
    torch.testing.assert_close(terms.t_tex, torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]))
    torch.testing.assert_close(terms.t_sem, torch.tensor([0.0, 0.1, 0.2, 0.6, 1.0]))
