import dataclasses

import pytest
import torch

from sfd.config import preset
from sfd.model import LightningDiT
from sfd.model.layers import rope_tables, rotate_pairs, sincos_pos_embed_2d


def tiny_model(**changes) -> LightningDiT:
    cfg = preset("tiny")
    torch.manual_seed(0)
    return LightningDiT.from_configs(dataclasses.replace(cfg.model, **changes), cfg.latent)


def perturbed(model: LightningDiT) -> LightningDiT:
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model


def inputs(b=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 6, 8, 8, generator=g)
    return (
        x,
        torch.rand(b, generator=g),
        torch.rand(b, generator=g),
        torch.randint(0, 11, (b,), generator=g),
    )


def test_shapes_and_zero_output_at_init():
    model = tiny_model().eval()
    x, tt, ts, y = inputs()
    out, proj = model(x, t_tex=tt, t_sem=ts, y=y, return_repa=True)
    assert out.shape == x.shape
    assert proj.shape == (3, 64, model.config.repa_dim)
    assert torch.count_nonzero(out) == 0  # adaLN-Zero and zero final layer


def test_batch_equals_items_one_at_a_time():
    model = perturbed(tiny_model()).eval()
    x, tt, ts, y = inputs(4)
    with torch.no_grad():
        full = model(x, t_tex=tt, t_sem=ts, y=y)
        items = torch.cat(
            [
                model(x[i : i + 1], t_tex=tt[i : i + 1], t_sem=ts[i : i + 1], y=y[i : i + 1])
                for i in range(4)
            ]
        )
    torch.testing.assert_close(full, items, atol=1e-6, rtol=1e-5)


def test_conditioning_matters_and_scalar_times_broadcast():
    model = perturbed(tiny_model()).eval()
    x, _, _, y = inputs()
    with torch.no_grad():
        a = model(x, t_tex=torch.tensor(0.2), t_sem=torch.tensor(0.5), y=y)
        b = model(x, t_tex=torch.full((3,), 0.2), t_sem=torch.full((3,), 0.5), y=y)
        swapped = model(x, t_tex=torch.tensor(0.5), t_sem=torch.tensor(0.2), y=y)
    assert torch.equal(a, b)
    assert not torch.allclose(a, swapped)


def test_single_timestep_variant_and_patch_size_2():
    model = perturbed(tiny_model(dual_timestep=False, patch_size=2)).eval()
    assert hasattr(model, "t_embedder") and not hasattr(model, "t_embedder_sem")
    x, tt, ts, y = inputs()
    assert model(x, t_tex=tt, t_sem=tt, y=y).shape == x.shape


def test_gradient_checkpointing_gives_same_gradients():
    x, tt, ts, y = inputs()
    grads = []
    for ckpt in (False, True):
        model = perturbed(tiny_model()).train()
        model.gradient_checkpointing = ckpt
        model(x, t_tex=tt, t_sem=ts, y=y).square().mean().backward()
        grads.append(
            torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        )
    torch.testing.assert_close(grads[0], grads[1])


def test_bad_input_shape_is_a_clear_error():
    model = tiny_model()
    with pytest.raises(ValueError, match=r"x must be \(B, 6, H, W\)"):
        model(torch.zeros(1, 5, 8, 8), t_tex=0.1, t_sem=0.2, y=torch.zeros(1, dtype=torch.long))


def test_sincos_table_layout():
    table = sincos_pos_embed_2d(16, 4)[0].reshape(4, 4, 16)  # (h, w, D)
    # first half depends on the column only, second half on the row only
    assert torch.allclose(table[0, :, :8], table[3, :, :8])
    assert torch.allclose(table[:, 0, 8:], table[:, 3, 8:])
    assert torch.allclose(table[0, 0], torch.tensor([0.0] * 4 + [1.0] * 4 + [0.0] * 4 + [1.0] * 4))


def test_rope_is_a_rotation_preserving_norms_and_relative():
    cos, sin = rope_tables(8, 4)
    q = torch.randn(1, 1, 16, 8)
    rotated = q * cos + rotate_pairs(q) * sin
    torch.testing.assert_close(rotated.norm(dim=-1), q.norm(dim=-1))
    # the dot product of two rotated copies of one vector depends only on their offset
    v = torch.randn(8).expand(1, 1, 16, 8)
    rv = (v * cos + rotate_pairs(v) * sin)[0, 0].reshape(4, 4, 8)
    torch.testing.assert_close(rv[0, 0] @ rv[1, 2], rv[2, 1] @ rv[3, 3])
