import torch

from sfd.flow.guidance import Guidance, autoguidance_velocity, cfg_velocity, plain_velocity
from sfd.latents.composite import LatentLayout

LAYOUT = LatentLayout(4, 2)


class Recorder(torch.nn.Module):
    """A label-dependent fake model that records the batch sizes it is called with."""

    null_class = 10

    def __init__(self, offset: float = 0.0) -> None:
        super().__init__()
        self.calls: list[int] = []
        self.offset = offset

    def forward(self, x, *, t_tex, t_sem, y):
        self.calls.append(x.shape[0])
        return x * (1 + self.offset) + y.float()[:, None, None, None]


def data():
    return torch.randn(3, 6, 2, 2), torch.tensor([1, 2, 3])


def test_scale_one_is_the_unguided_model_exactly():
    x, y = data()
    m = Recorder()
    out = cfg_velocity(m, y, Guidance(1.0, 1.0), LAYOUT)(x, torch.tensor(0.2), torch.tensor(0.5))
    assert torch.equal(out, plain_velocity(m, y)(x, torch.tensor(0.2), torch.tensor(0.5)))
    assert m.calls == [3, 3]


def test_cfg_guides_all_channels_with_separate_scales():
    x, y = data()
    m = Recorder()
    out = cfg_velocity(m, y, Guidance(2.0, 3.0), LAYOUT)(x, torch.tensor(0.5), torch.tensor(0.5))
    assert m.calls == [6]
    cond, uncond = x + y.float()[:, None, None, None], x + 10.0
    torch.testing.assert_close(LAYOUT.tex(out), LAYOUT.tex(uncond + 2 * (cond - uncond)))
    torch.testing.assert_close(LAYOUT.sem(out), LAYOUT.sem(uncond + 3 * (cond - uncond)))


def test_no_unconditional_pass_outside_the_interval():
    x, y = data()
    m = Recorder()
    g = Guidance(2.0, 2.0, interval_tex=(0.5, 1.0), interval_sem=(0.5, 1.0))
    fn = cfg_velocity(m, y, g, LAYOUT)
    out = fn(x, torch.tensor(0.1), torch.tensor(0.4))
    assert m.calls == [3]  # conditional only
    assert torch.equal(out, x + y.float()[:, None, None, None])
    fn(x, torch.tensor(0.1), torch.tensor(0.6))  # semantics inside: one doubled batch
    assert m.calls == [3, 6]


def test_interval_upper_bound():
    g = Guidance(2.0, 2.0, interval_tex=(0.0, 0.5))
    w = g.weights(torch.tensor(0.7), torch.tensor(0.7), 1, LAYOUT, torch.zeros(1))
    assert torch.equal(w.flatten(), torch.tensor([1.0] * 4 + [2.0] * 2))


def test_autoguidance_uses_conditional_guide():
    x, y = data()
    main, guide = Recorder(0.5), Recorder(0.0)
    out = autoguidance_velocity(main, guide, y, Guidance(1.5, 1.5), LAYOUT)(x, 0.3, 0.6)
    v_main, v_guide = 1.5 * x + y.float()[:, None, None, None], x + y.float()[:, None, None, None]
    torch.testing.assert_close(out, v_guide + 1.5 * (v_main - v_guide))
    assert guide.calls == [3] and main.calls == [3]
    main.calls.clear(), guide.calls.clear()
    autoguidance_velocity(main, guide, y, Guidance(1.0, 1.0), LAYOUT)(x, 0.3, 0.6)
    assert guide.calls == []
