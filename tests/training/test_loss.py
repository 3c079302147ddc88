import dataclasses

import pytest
import torch

from sfd.config import FlowConfig, preset
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


def test_mask_clamped_drops_the_clamped_part():
    x1 = torch.randn(2, 6, 2, 2)
    x0 = torch.randn(2, 6, 2, 2)
    flow = FlowConfig(delta_t=0.3, mask_clamped=True)
    base = torch.tensor([1.0, 0.1])  # item 0: tau = 1.3 > 1 (sem clamped); item 1: tau < Δt
    a = flow_loss(
        Constant(torch.zeros(1, 6, 1, 1)),
        x1,
        torch.zeros(2, dtype=torch.long),
        x0=x0,
        base_time=base,
        flow=flow,
        layout=LAYOUT,
    )
    bad = torch.zeros(1, 6, 1, 1)
    bad[:, 4:] = 100.0
    b = flow_loss(
        Constant(bad),
        x1,
        torch.zeros(2, dtype=torch.long),
        x0=x0,
        base_time=base,
        flow=flow,
        layout=LAYOUT,
    )
    assert a.vel[0] == b.vel[0]  # the semantic error of item 0 is masked
    assert b.vel[1] > a.vel[1]


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
    model = LightningDiT(cfg.model, cfg.latent)
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
