"""The one generation function: the per-image noise rule, fixed-size model batches, the
settings' solver from the registry, and guidance as the settings say."""

from dataclasses import fields

import pytest
import torch
from torch import nn

from sfd.config import SampleConfig
from sfd.flow.latent_sampling import (
    SampleSettings,
    draw_noise,
    image_generators,
    image_noise,
    sample_latents,
)
from sfd.flow.numerics import padded_batches
from sfd.flow.progress import offset_path
from sfd.flow.solvers import SOLVERS
from sfd.latents.composite import LatentLayout

LAYOUT = LatentLayout(4, 2)


class Toy(nn.Module):
    """A row-wise velocity model, out = tanh(W x) + label and time terms; ``calls`` records
    each forward's batch size and labels."""

    null_class = 3

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w = torch.randn(6, 6, generator=g) * 0.3
        self.calls = []

    def forward(self, x, *, t_tex, t_sem, y):
        self.calls.append((x.shape[0], y.tolist()))
        h = torch.einsum("oc,bchw->bohw", self.w, x).tanh()
        return h + 0.1 * y.float().view(-1, 1, 1, 1) + (t_tex + t_sem).view(-1, 1, 1, 1)


def settings(**changes) -> SampleConfig:
    base = dict(method="euler", num_steps=5, compute_batch=4, atol=1e-4, rtol=1e-3)
    return SampleConfig(**{**base, **changes})


def test_image_noise_is_the_noise_of_the_per_image_generators():
    shape = (6, 2, 2)
    torch.testing.assert_close(
        image_noise(range(3, 7), shape, seed=11),
        draw_noise(image_generators(11, 4, start=3), shape),
        rtol=0,
        atol=0,
    )
    assert image_noise([0], shape).dtype == torch.float32


@pytest.mark.parametrize("num", range(1, 10))
@pytest.mark.parametrize("size", (1, 3, 4))
def test_padded_batches_cover_every_row_once_in_groups_of_exactly_size(num, size):
    groups = list(padded_batches(num, size))
    assert all(len(rows) == size for rows, _ in groups)
    real = torch.cat([rows[:n] for rows, n in groups])
    assert real.tolist() == list(range(num))
    padding = torch.cat([rows[n:] for rows, n in groups])
    assert set(padding.tolist()) <= {num - 1}


@pytest.mark.parametrize("method", list(SOLVERS))
def test_an_image_does_not_depend_on_the_images_solved_with_it(method):
    path = offset_path(0.3)
    labels = torch.tensor([0, 1, 2, 0, 1])
    noise = image_noise(range(5), (6, 2, 2), seed=4)
    s = settings(method=method, cfg_scale_tex=2.0, cfg_scale_sem=1.5)
    model = Toy()
    together = sample_latents(model, labels, noise, s, LAYOUT, path).final
    assert {n for n, _ in model.calls} == {4}  # the model only ever sees compute_batch rows
    if SOLVERS[method].fixed_step:  # an adaptive solver shares its steps within a batch
        alone = sample_latents(Toy(), labels[2:3], noise[2:3], s, LAYOUT, path).final
        assert torch.equal(together[2], alone[0])


def test_guidance_calls_the_null_class_only_where_a_part_is_guided():
    path = offset_path(0.3)
    noise = image_noise(range(2), (6, 2, 2))
    labels = torch.tensor([1, 2])
    for scale, want in ((1.0, {1, 2}), (2.0, {1, 2, Toy.null_class})):
        model = Toy()
        sample_latents(model, labels, noise, settings(cfg_scale_sem=scale), LAYOUT, path)
        assert {y for _, ys in model.calls for y in ys} == want


def test_autoguidance_uses_the_guide_model_and_needs_one():
    path = offset_path(0.3)
    noise = image_noise(range(2), (6, 2, 2))
    labels = torch.tensor([1, 2])
    s = settings(guide="autoguidance", cfg_scale_tex=1.5, cfg_scale_sem=1.5)
    guide = Toy()
    sample_latents(Toy(), labels, noise, s, LAYOUT, path, guide=guide)
    assert guide.calls  # the guide was evaluated
    with pytest.raises(ValueError, match="needs a guide model"):
        sample_latents(Toy(), labels, noise, s, LAYOUT, path)


def test_an_unknown_solver_is_the_registrys_error():
    s = settings()
    object.__setattr__(s, "method", "rk4")  # past SampleConfig's own check
    with pytest.raises(ValueError, match="unknown solver 'rk4'; known solvers: euler, heun"):
        sample_latents(Toy(), torch.tensor([0]), torch.zeros(1, 6, 2, 2), s, LAYOUT, None)


def test_the_settings_have_the_sample_sections_fields_and_defaults_check_alike():
    assert [f.name for f in fields(SampleSettings)] == [f.name for f in fields(SampleConfig)]
    values = {f.name: getattr(SampleConfig(), f.name) for f in fields(SampleConfig)}
    assert SampleSettings(**values) == SampleSettings(**{**values, "num_steps": 24.0})
    for bad in ({"boundary": "late"}, {"guide": "none"}, {"num_steps": 0}):
        with pytest.raises(ValueError, match=f"{next(iter(bad))} must be"):
            SampleSettings(**{**values, **bad})
    with pytest.raises(ValueError, match="unknown solver 'rk4'"):
        SampleSettings(**{**values, "method": "rk4"})
