"""sfd.tools.bench_release (scripts/bench_release.py): the release's constructor arguments it
writes for a preset.

The side-by-side timing itself needs a checkout of the release, which the project does not ship;
what can be checked without it is that the arguments describe the same model and loss: they
round-trip through sfd's importer of release configs, and on the upstream fixture's own
configuration they are the arguments the release was called with.
"""

import dataclasses
import json
from pathlib import Path

import pytest

from sfd.config import preset
from sfd.tools.bench_release import import_release, release_kwargs
from sfd.upstream.config import config_from_kwargs

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "tests" / "fixtures" / "upstream_parity" / "upstream_config.json"


@pytest.mark.parametrize("name", ["tiny", "demo", "S", "XL"])
def test_release_kwargs_round_trip(name):
    cfg = preset(name)
    model, transport = release_kwargs(cfg)
    back = config_from_kwargs(model, transport)
    assert dataclasses.replace(back.model, repa_dim=cfg.model.repa_dim) == cfg.model
    assert back.latent == cfg.latent
    for field in ("delta_t", "time_dist", "sem_weight", "cos_weight", "repa_weight", "repa_mode"):
        assert getattr(back.flow, field) == getattr(cfg.flow, field), field
    assert model["in_channels"] == cfg.latent.channels
    assert model["semantic_chans"] == cfg.latent.sem_channels


def test_release_kwargs_are_the_fixture_call():
    """On the configuration the upstream fixtures were made with, the written arguments are
    the ones the release's code was called with."""
    up = json.loads(FIXTURE.read_text())
    cfg = config_from_kwargs(up["model_kwargs"], up["create_transport_kwargs"])
    model, transport = release_kwargs(cfg)
    for key, value in model.items():
        assert up["model_kwargs"][key] == value, key
    for key, value in transport.items():
        assert up["create_transport_kwargs"][key] == value, key


def test_missing_release_checkout_is_one_line(tmp_path):
    with pytest.raises(SystemExit, match="expected a checkout with models/lightningdit.py"):
        import_release(tmp_path, compiled=False)
