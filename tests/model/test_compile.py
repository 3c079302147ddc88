"""Compiled blocks keep the eager model's parameter names (so checkpoints) and outputs.

``torch.compile`` on CPU needs a C++ compiler and takes tens of seconds: ``slow``
(``pytest -m slow``).
"""

from __future__ import annotations

import pytest
import torch

from sfd.model import LightningDiT
from sfd.model.compile import compile_blocks
from tests.helpers import tiny_config


@pytest.mark.slow
def test_compiled_blocks_keep_names_and_outputs():
    cfg = tiny_config()
    torch.manual_seed(0)
    eager = LightningDiT.from_configs(cfg.model, cfg.latent).eval()
    for p in eager.parameters():  # leave the zero init, so the output depends on every block
        p.data.add_(0.02 * torch.randn_like(p))
    compiled = LightningDiT.from_configs(cfg.model, cfg.latent).eval()
    compiled.load_state_dict(eager.state_dict())
    compile_blocks(compiled)
    assert compiled.state_dict().keys() == eager.state_dict().keys()
    lat = cfg.latent
    x = torch.randn(3, lat.channels, lat.size, lat.size)
    t_tex, t_sem, y = torch.rand(3), torch.rand(3), torch.tensor([0, 1, 2])
    with torch.no_grad():
        want = eager(x, t_tex=t_tex, t_sem=t_sem, y=y)
        got = compiled(x, t_tex=t_tex, t_sem=t_sem, y=y)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
