"""The release's configs -> sfd configs: its YAML files and its constructor-argument JSON.

Key names follow the release (see the fixture set's ``released_yaml_key_aliases``): YAML
``model.in_chans`` is ``in_channels``, ``data.image_size / vae.downsample_ratio`` is
``input_size``, ``model.repa_feat_depth`` is ``repa_depth``; ``num_sampling_steps`` counts time
points, so the number of solver steps is one less.
"""

from __future__ import annotations

import json

import pytest
import yaml

from sfd.config import SampleConfig
from sfd.upstream import parse_model_type, read_inference_config, read_upstream_config

XL_YAML = {
    "model": {
        "model_type": "LightningDiT-XL/1",
        "in_chans": 48,
        "semantic_chans": 16,
        "use_qknorm": True,
        "use_swiglu": True,
        "use_rope": True,
        "use_rmsnorm": True,
        "wo_shift": False,
        "use_repa": True,
        "repa_dino_version": "dinov2_vitb14_reg",
        "repa_feat_depth": 8,
        "semfirst_delta_t": 0.3,
        "semantic_weight": 2.0,
        "semfirst_infer_interval_mode": "both",
    },
    "data": {"image_size": 256, "num_classes": 1000},
    "vae": {"downsample_ratio": 16},
    "transport": {"use_lognorm": True, "use_cosine_loss": True},
    "sample": {
        "sampling_method": "euler",
        "num_sampling_steps": 100,
        "cfg_scale": 1.5,
        "cfg_interval_start": 0.11,
    },
}

XL_KWARGS = {
    "input_size": 16,
    "patch_size": 1,
    "in_channels": 48,
    "hidden_size": 1152,
    "depth": 28,
    "num_heads": 16,
    "num_classes": 1000,
    "learn_sigma": False,
    "use_repa": True,
    "repa_dino_version": "dinov2_vitb14_reg",
    "repa_depth": 8,
    "semantic_chans": 16,
    "semfirst_delta_t": 0.3,
}


def write_yaml(path, data):
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    ("name", "want"),
    [
        ("LightningDiT-XL/1", (28, 1152, 16, 1)),
        ("LightningDiT-B/2", (12, 768, 12, 2)),
        ("LightningDiT-1p0B/1", (24, 1536, 24, 1)),
    ],
)
def test_model_type_names(name, want):
    arch = parse_model_type(name)
    assert (arch["depth"], arch["hidden_size"], arch["num_heads"], arch["patch_size"]) == want


def test_unknown_model_type_is_a_clear_error():
    with pytest.raises(ValueError, match="'LightningDiT-Q/1'.*LightningDiT-XL/1"):
        parse_model_type("LightningDiT-Q/1")


def test_release_yaml_gives_the_papers_xl(tmp_path):
    cfg = read_upstream_config(write_yaml(tmp_path / "xl.yaml", XL_YAML))
    m, lat, flow, s = cfg.model, cfg.latent, cfg.flow, cfg.sample
    assert (m.depth, m.width, m.num_heads, m.patch_size) == (28, 1152, 16, 1)
    assert (lat.tex_channels, lat.sem_channels, lat.size) == (32, 16, 16)
    assert m.num_classes == 1000 and m.dual_timestep and m.repa_dim == 768 and m.repa_depth == 8
    assert flow.delta_t == 0.3 and flow.sem_weight == 2.0 and flow.time_dist == "logit_normal"
    assert s.method == "euler" and s.num_steps == 99
    assert s.cfg_scale_tex == s.cfg_scale_sem == 1.5
    assert s.cfg_interval_tex == s.cfg_interval_sem == (0.11, 1.0)


def test_yaml_and_constructor_json_describe_the_same_model(tmp_path):
    from_yaml = read_upstream_config(write_yaml(tmp_path / "xl.yaml", XL_YAML))
    json_path = tmp_path / "xl.json"
    json_path.write_text(json.dumps({"model_kwargs": XL_KWARGS}))
    from_json = read_upstream_config(json_path)
    assert from_yaml.model == from_json.model
    assert from_yaml.latent == from_json.latent


def test_interval_mode_sem_guides_only_the_semantic_part(tmp_path):
    data = {**XL_YAML, "model": {**XL_YAML["model"], "semfirst_infer_interval_mode": "sem"}}
    s = read_upstream_config(write_yaml(tmp_path / "sem.yaml", data)).sample
    assert s.cfg_interval_sem == (0.11, 1.0) and s.cfg_interval_tex == (0.0, 1.0)


def test_bad_release_configs_are_clear_errors(tmp_path):
    no_data = {k: v for k, v in XL_YAML.items() if k != "data"}
    with pytest.raises(ValueError, match="missing the key 'data'"):
        read_upstream_config(write_yaml(tmp_path / "a.yaml", no_data))
    sigma = {**XL_YAML, "model": {**XL_YAML["model"], "learn_sigma": True}}
    with pytest.raises(ValueError, match="learn_sigma=True is not supported"):
        read_upstream_config(write_yaml(tmp_path / "b.yaml", sigma))
    with pytest.raises(ValueError, match="neither a release YAML config"):
        read_upstream_config(write_yaml(tmp_path / "c.yaml", ["not", "a", "config"]))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_upstream_config(tmp_path / "missing.yaml")


# The sample section of the release's inference YAMLs (docs/METHOD.md §5.1: dopri5 atol 1e-6
# rtol 1e-3, num_sampling_steps 250, cfg_scale 1.0, cfg_interval_start 0; AutoGuidance named by
# autoguidance / autoguidance_config, its scale left to the CFG_SCALE environment variable).
RELEASE_SAMPLE = {
    "mode": "ODE",
    "sampling_method": "dopri5",
    "atol": 0.000001,
    "rtol": 0.001,
    "reverse": False,
    "likelihood": False,
    "num_sampling_steps": 250,
    "cfg_scale": 1.0,
    "per_proc_batch_size": 4,
    "fid_num": 50000,
    "cfg_interval_start": 0,
    "timestep_shift": 0,
    "balanced_sampling": True,
}
RELEASE_XL = {**XL_YAML, "model": {**XL_YAML["model"], "repa_feat_depth": 2}}
AG = {"autoguidance": True, "autoguidance_config": "configs/sfd/autoguidance_b/inference.yaml"}


def test_release_inference_yaml_is_the_release_sampler(tmp_path):
    s = read_upstream_config(
        write_yaml(tmp_path / "i.yaml", {**RELEASE_XL, "sample": RELEASE_SAMPLE})
    ).sample
    assert (s.method, s.atol, s.rtol, s.boundary) == ("dopri5", 1e-6, 1e-3, "release")
    assert s.num_steps == 249 and s.timestep_shift == 0.0 and s.guide == "cfg"
    assert s.cfg_scale_tex == s.cfg_scale_sem == 1.0
    assert s.cfg_interval_tex == s.cfg_interval_sem == (0.0, 1.0)


def test_autoguidance_yaml_needs_a_scale(tmp_path):
    path = write_yaml(tmp_path / "ag.yaml", {**RELEASE_XL, "sample": {**RELEASE_SAMPLE, **AG}})
    with pytest.raises(ValueError, match="autoguidance: true.*cfg_scale 1.0.*--cfg-scale"):
        read_upstream_config(path)
    s = read_upstream_config(path, cfg_scale=1.5).sample
    assert s.guide == "autoguidance" and s.cfg_scale_tex == s.cfg_scale_sem == 1.5
    assert s.boundary == "release" and s.method == "dopri5"
    # the architecture alone needs no scale
    assert read_upstream_config(path, sampling=False).sample == SampleConfig()
    json_path = tmp_path / "xl.json"
    json_path.write_text(json.dumps({"model_kwargs": XL_KWARGS}))
    with pytest.raises(ValueError, match="--inference-config"):
        read_upstream_config(json_path, cfg_scale=1.5)


def test_inference_yaml_must_describe_the_same_model(tmp_path):
    cfg = read_upstream_config(write_yaml(tmp_path / "xl.yaml", RELEASE_XL))
    data = {**RELEASE_XL, "sample": {**RELEASE_SAMPLE, **AG}}
    s = read_inference_config(write_yaml(tmp_path / "ok.yaml", data), cfg, cfg_scale=1.6)
    assert s.guide == "autoguidance" and s.cfg_scale_sem == 1.6 and s.boundary == "release"
    for key, value, named in (
        ("model_type", "LightningDiT-B/1", "model.model_type"),
        ("semfirst_delta_t", 0.2, "model.semfirst_delta_t"),
        ("in_chans", 36, "model.in_chans"),
    ):
        bad = {**data, "model": {**data["model"], key: value}}
        with pytest.raises(ValueError, match=named):
            read_inference_config(write_yaml(tmp_path / f"{key}.yaml", bad), cfg, cfg_scale=1.5)
    no_sample = {k: v for k, v in RELEASE_XL.items() if k != "sample"}
    with pytest.raises(ValueError, match="no 'sample' section"):
        read_inference_config(write_yaml(tmp_path / "train.yaml", no_sample), cfg)
