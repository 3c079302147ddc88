import dataclasses

import pytest
import torch

from sfd.config import PRESETS, Config, apply_overrides, preset
from sfd.model import LightningDiT, count_parameters


@pytest.mark.parametrize(("name", "expected"), [("B", 130e6), ("XL", 675e6)])
def test_parameter_counts_at_48_channels(name, expected):
    cfg = preset(name)
    assert cfg.latent.channels == 48
    model_cfg = dataclasses.replace(cfg.model, repa_dim=0)  # the paper counts the backbone
    with torch.device("meta"):
        n = count_parameters(LightningDiT.from_configs(model_cfg, cfg.latent))
    assert abs(n - expected) / expected < 0.01, n


def test_presets_have_method_table_shapes():
    table = {
        "S": (12, 384, 6),
        "B": (12, 768, 12),
        "L": (24, 1024, 16),
        "XL": (28, 1152, 16),
        "XXL": (24, 1536, 24),
    }
    for name, (depth, width, heads) in table.items():
        m = preset(name).model
        assert (m.depth, m.width, m.num_heads) == (depth, width, heads)
    assert set(table) | {"tiny", "demo"} == set(PRESETS)


def test_overrides_are_typed():
    cfg = apply_overrides(
        preset("tiny"),
        [
            "train.lr=2e-4",
            "flow.delta_t=0",
            "train.hflip=false",
            "sample.cfg_interval_tex=0.1,0.9",
            "sample.method=heun",
        ],
    )
    assert cfg.train.lr == 2e-4 and isinstance(cfg.train.lr, float)
    assert cfg.flow.delta_t == 0.0
    assert cfg.train.hflip is False
    assert cfg.sample.cfg_interval_tex == (0.1, 0.9)
    assert cfg.sample.method == "heun"


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("train.nope=1", "unknown key 'nope'"),
        ("nosection.lr=1", "unknown config section"),
        ("train.lr=fast", "cannot parse 'fast' for train.lr"),
        ("train.total_steps=1.5", "cannot parse"),
        ("sample.method=rk4", "one of 'euler'"),
        ("flow.delta_t=1.5", "flow.delta_t must be a number in [0, 1]"),
        ("flow.delta_t=-0.1", "flow.delta_t must be"),
        ("train.lr", "section.key=value"),
    ],
)
def test_bad_overrides_are_errors(item, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        apply_overrides(preset("tiny"), [item])


def test_delta_t_bounds_are_accepted():
    for dt in ("0", "1", "0.3"):
        assert apply_overrides(preset("tiny"), [f"flow.delta_t={dt}"]).flow.delta_t == float(dt)


def test_dict_roundtrip_and_unknown_keys():
    cfg = preset("XL")
    assert Config.from_dict(cfg.to_dict()) == cfg
    data = cfg.to_dict()
    data["model"]["wat"] = 1
    with pytest.raises(ValueError, match="unknown config key model.wat"):
        Config.from_dict(data)


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown preset 'XS'"):
        preset("XS")


def test_invalid_model_shape():
    with pytest.raises(ValueError, match="multiple of model.num_heads"):
        dataclasses.replace(preset("tiny").model, width=65)


def test_a_texture_only_latent_refuses_a_semantic_lead():
    cfg = apply_overrides(preset("tiny"), ["flow.delta_t=0", "latent.sem_channels=0"])
    assert cfg.latent.sem_channels == 0
    with pytest.raises(ValueError, match=r"flow.delta_t must be 0 for a texture-only latent"):
        apply_overrides(preset("tiny"), ["latent.sem_channels=0"])
