"""The EMA: a frozen copy, ``decay * ema + (1 - decay) * model`` for trained parameters, a copy
of everything else, and no change when the step is skipped (``keep = 0``)."""

import torch
from torch import nn

from sfd.training.ema import make_ema, update_ema


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    model[1].weight.requires_grad_(False)  # a frozen parameter is copied, not averaged
    return model


def test_update_is_the_exponential_average():
    model = _model()
    ema = make_ema(model)
    assert not ema.training and not any(p.requires_grad for p in ema.parameters())
    before = ema[0].weight.clone()
    with torch.no_grad():
        model[0].weight.add_(1.0)
        model[1].weight.mul_(3.0)
        model[1].running_mean.add_(2.0)
    update_ema(ema, model, decay=0.9)
    torch.testing.assert_close(ema[0].weight, 0.9 * before + 0.1 * model[0].weight)
    assert torch.equal(ema[1].weight, model[1].weight)
    assert torch.equal(ema[1].running_mean, model[1].running_mean)


def test_a_skipped_step_leaves_the_average():
    model = _model()
    ema = make_ema(model)
    before = ema[0].weight.clone()
    with torch.no_grad():
        model[0].weight.add_(1.0)
    update_ema(ema, model, decay=0.5, keep=torch.tensor(0.0))
    assert torch.equal(ema[0].weight, before)
    update_ema(ema, model, decay=0.5, keep=torch.tensor(1.0))
    torch.testing.assert_close(ema[0].weight, 0.5 * before + 0.5 * model[0].weight)
