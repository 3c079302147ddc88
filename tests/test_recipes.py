"""The release's named settings carry docs/METHOD.md's numbers.

Every expected value below is copied from docs/METHOD.md (section named at each), not read back from
``sfd.recipes``: §3 "Optimiser (release)", §3.1-3.6 (objective), §2.5/§2.8 (label dropout, REPA
block), §4 and §5.1 (the published sampler and the AutoGuidance table).
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from sfd.cli import main
from sfd.config import SampleConfig, preset
from sfd.recipes import (
    RECIPES,
    SAMPLERS,
    apply_recipe,
    apply_sampler,
    describe_sampler,
    is_release_sampler,
)

# docs/METHOD.md §3: AdamW betas (0.9, 0.999), no weight decay, global batch 256, EMA 0.9999, bf16
# autocast, no grad clip; Δt 0.3, logit-normal base time, β 2.0, cosine loss weight 1,
# REPA on block 2 (§2.8); label dropout 0.1 (§2.5); clamped targets not masked (§3.7, parity).
COMMON = {
    "train.beta1": 0.9,
    "train.weight_decay": 0.0,
    "train.global_batch_size": 256,
    "train.ema_decay": 0.9999,
    "train.precision": "bf16",
    "train.grad_clip": 0.0,
    "flow.delta_t": 0.3,
    "flow.time_dist": "logit_normal",
    "flow.sem_weight": 2.0,
    "flow.cos_weight": 1.0,
    "flow.mask_clamped": False,
    "model.repa_depth": 2,
    "model.class_dropout_prob": 0.1,
}


def values(cfg, keys):
    d = cfg.to_dict()
    return {k: d[k.split(".")[0]][k.split(".")[1]] for k in keys}


@pytest.mark.parametrize(
    ("name", "steps", "lr", "beta2", "repa_weight", "repa_mode"),
    [
        # §3: lr 1e-4, beta2 0.999, REPA λ 1.0 'cos'; 400K steps = 80 epochs
        ("release-400k", 400_000, 1e-4, 0.999, 1.0, "cos"),
        # §3: 80-epoch re-run recipe lr 2e-4, beta2 0.95; §3.6: REPA 0.5 with cos_mse
        ("release-80ep", 400_000, 2e-4, 0.95, 0.5, "cos_mse"),
        # §3: 4M = 800 epochs
        ("release-800ep", 4_000_000, 1e-4, 0.999, 1.0, "cos"),
    ],
)
@pytest.mark.parametrize("backbone", ["XL", "XXL"])
def test_training_recipes_are_methods_numbers(
    name, steps, lr, beta2, repa_weight, repa_mode, backbone
):
    cfg = apply_recipe(preset(backbone), name)
    want = {
        **COMMON,
        "train.total_steps": steps,
        "train.lr": lr,
        "train.beta2": beta2,
        "flow.repa_weight": repa_weight,
        "flow.repa_mode": repa_mode,
    }
    assert values(cfg, want) == want
    base = preset(backbone).model
    assert (cfg.model.depth, cfg.model.width, cfg.model.num_heads) == (
        base.depth,
        base.width,
        base.num_heads,
    )
    assert cfg.preset == f"{backbone}+{name}"


def test_guide_recipe_is_the_papers_b_guide():
    # §5.1: SFD LightningDiT-B/1, Δt 0.3, 48 channels, REPA depth 2, β 2, lr 1e-4, β2 0.999,
    # batch 256; the published guides are its 60K, 70K and 120K checkpoints
    cfg = apply_recipe(preset("B"), "release-guide")
    want = {**COMMON, "train.lr": 1e-4, "train.beta2": 0.999, "flow.repa_weight": 1.0}
    assert values(cfg, want) == want
    m = cfg.model
    assert (m.depth, m.width, m.num_heads, m.patch_size) == (12, 768, 12, 1)
    assert cfg.latent.channels == 48
    for step in (60_000, 70_000, 120_000):
        assert step <= cfg.train.total_steps and step % cfg.train.ckpt_every == 0
    with pytest.raises(ValueError, match="trains the B backbone; use --preset B"):
        apply_recipe(preset("XL"), "release-guide")


# §4 / §5.1: dopri5 atol 1e-6, rtol 1e-3, the release's boundary rule, num_sampling_steps 250
# grid points (249 steps), no timestep shift, no interval (cfg_interval_start 0).
SOLVER = {
    "sample.method": "dopri5",
    "sample.atol": 1e-6,
    "sample.rtol": 1e-3,
    "sample.boundary": "release",
    "sample.num_steps": 249,
    "sample.timestep_shift": 0.0,
    "sample.cfg_interval_tex": (0.0, 1.0),
    "sample.cfg_interval_sem": (0.0, 1.0),
}


def test_release_sampler_has_no_guidance():
    # §5.1: "Without guidance" means cfg_scale 1.0, no guidance at all
    cfg = apply_sampler(preset("XL"), "release")
    want = {
        **SOLVER,
        "sample.guide": "cfg",
        "sample.cfg_scale_tex": 1.0,
        "sample.cfg_scale_sem": 1.0,
    }
    assert values(cfg, want) == want
    assert is_release_sampler(cfg.sample) and not is_release_sampler(SampleConfig())


@pytest.mark.parametrize(
    ("name", "scale"),
    [  # §5.1's table: XL 80 -> 1.6, XL 800 -> 1.5, XXL 80 -> 1.5, XXL 800 -> 1.5
        ("release-ag-xl-80ep", 1.6),
        ("release-ag-xl-800ep", 1.5),
        ("release-ag-xxl-80ep", 1.5),
        ("release-ag-xxl-800ep", 1.5),
    ],
)
def test_autoguidance_samplers_follow_the_table(name, scale):
    cfg = apply_sampler(preset("XL"), name)
    want = {
        **SOLVER,
        "sample.guide": "autoguidance",
        "sample.cfg_scale_tex": scale,
        "sample.cfg_scale_sem": scale,
    }
    assert values(cfg, want) == want
    assert "AutoGuidance w" in describe_sampler(cfg.sample)


def test_settings_touch_only_their_sections():
    base = preset("XL").to_dict()
    for name in SAMPLERS:
        got = apply_sampler(preset("XL"), name).to_dict()
        assert {k: v for k, v in got.items() if k != "sample"} == {
            k: v for k, v in base.items() if k != "sample"
        }
    for name in RECIPES:
        got = apply_recipe(preset("B"), name).to_dict()
        assert got["latent"] == base["latent"] and got["sample"] == base["sample"]
    with pytest.raises(ValueError, match="unknown sampler 'nope'"):
        apply_sampler(preset("XL"), "nope")


def test_cli_recipe_then_set_and_presets_lists_them():
    def run(*args):
        return CliRunner().invoke(main, list(args), catch_exceptions=False)

    res = run("train", "--preset", "XL", "--recipe", "release-80ep", "--dry-run")
    assert res.exit_code == 0, res.output
    cfg = json.loads(res.output)
    assert cfg["train"]["lr"] == 2e-4 and cfg["preset"] == "XL+release-80ep"
    res = run(
        "train", "--preset", "XL", "--recipe", "release-80ep", "--set", "train.lr=3e-4", "--dry-run"
    )
    assert json.loads(res.output)["train"]["lr"] == 3e-4  # --set wins over the recipe
    res = run("presets")
    assert res.exit_code == 0
    for name in (*RECIPES, *SAMPLERS):
        assert f"  {name}" in res.output
