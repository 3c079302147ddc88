"""The release's files end to end on CPU: import, AutoGuidance sampling, identical latents.

A run folder laid out as the release's (a checkpoint ``.pt`` holding ``ema`` and ``model``
state dicts, the two latent-statistics files ``{'mean', 'std'}`` of shape (1, C, 1, 1), an
inference YAML that turns AutoGuidance on, a guide checkpoint) is imported with
``sfd import-upstream`` and sampled with ``sfd sample --latents-only``; the latents must equal,
bit for bit, sampling the same weights loaded directly into :class:`sfd.model.LightningDiT`
with the same settings. The weights are the release-made fixture set's (tests/fixtures/
upstream_parity, or ``SFD_UPSTREAM_FIXTURES``); its tiny architecture has no release
``model_type``, so the architecture comes from its ``upstream_config.json`` (constructor
arguments) and the sampler from the inference YAML (``--inference-config``).
"""

from __future__ import annotations

import dataclasses
import json
import logging

import pytest
import torch
import yaml
from click.testing import CliRunner
from safetensors.torch import load_file

from sfd.api import load_checkpoint
from sfd.cli import main
from sfd.config import Config, FlowConfig, LatentConfig, ModelConfig, SampleConfig
from sfd.generate import LatentSampler
from sfd.latents.composite import LatentStats
from sfd.model import LightningDiT
from tests.helpers import FIXTURES

SCALE = 1.5  # the AutoGuidance scale given at import, as the release's CFG_SCALE
NUM = 4


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def direct_model(kwargs: dict, state: dict) -> tuple[LightningDiT, ModelConfig, LatentConfig]:
    """The release's LightningDiT(...) arguments, mapped by hand (not by sfd.upstream)."""
    sem = kwargs["semantic_chans"]
    repa_dims = {"vits14": 384, "vitb14": 768, "vitl14": 1024, "vitg14": 1536}
    repa_dim = next(d for k, d in repa_dims.items() if k in kwargs["repa_dino_version"])
    model_cfg = ModelConfig(
        depth=kwargs["depth"],
        width=kwargs["hidden_size"],
        num_heads=kwargs["num_heads"],
        mlp_ratio=kwargs["mlp_ratio"],
        patch_size=kwargs["patch_size"],
        num_classes=kwargs["num_classes"],
        class_dropout_prob=kwargs["class_dropout_prob"],
        dual_timestep=kwargs["semfirst_delta_t"] > 0,
        repa_depth=kwargs["repa_depth"],
        repa_projector_dim=kwargs["repa_projector_dim"],
        repa_dim=repa_dim if kwargs["use_repa"] else 0,
        **{k: kwargs.get(k, True) for k in ("use_qknorm", "use_swiglu", "use_rope", "use_rmsnorm")},
    )
    latent_cfg = LatentConfig(
        tex_channels=kwargs["in_channels"] - sem, sem_channels=sem, size=kwargs["input_size"]
    )
    model = LightningDiT.from_configs(model_cfg, latent_cfg)
    model.load_state_dict(state, strict=True)
    return model.eval(), model_cfg, latent_cfg


def release_stats(path, channels: int, offset: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A statistics file as the release writes it: {'mean', 'std'}, each (1, C, 1, 1)."""
    mean = torch.linspace(-0.5, 0.5, channels).view(1, channels, 1, 1) + offset
    std = torch.linspace(0.5, 1.5, channels).view(1, channels, 1, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"mean": mean, "std": std}, path)
    return mean.flatten(), std.flatten()


def write_yaml(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def release_inference_yaml(kwargs: dict, transport: dict, ckpt: str, guide_yaml: str) -> dict:
    """An inference YAML in the release's layout (configs/sfd/*/inference_*_autoguidance.yaml),
    without ``model_type``: the fixture's architecture has none."""
    return {
        "ckpt_path": ckpt,
        "data": {
            "data_path": "outputs/dataset/latents",
            "image_size": kwargs["input_size"] * 16,
            "num_classes": kwargs["num_classes"],
            "latent_norm": True,
            "latent_sv_norm": True,
            "latent_multiplier": 1.0,
        },
        "vae": {"model_name": "sdvae_f16d32", "downsample_ratio": 16},
        "model": {
            "in_chans": kwargs["in_channels"],
            "semantic_chans": kwargs["semantic_chans"],
            "semfirst_delta_t": kwargs["semfirst_delta_t"],
            "semantic_weight": transport.get("semantic_weight", 2.0),
            "use_repa": kwargs["use_repa"],
            "repa_dino_version": kwargs["repa_dino_version"],
            "repa_feat_depth": kwargs["repa_depth"],
            "semfirst_infer_interval_mode": kwargs.get("semfirst_infer_interval_mode", "both"),
        },
        "transport": {"path_type": "Linear", "prediction": "velocity", "use_lognorm": True},
        "sample": {
            "mode": "ODE",
            "sampling_method": "dopri5",
            "atol": 0.000001,
            "rtol": 0.001,
            "num_sampling_steps": 250,
            "cfg_scale": 1.0,
            "cfg_interval_start": 0,
            "timestep_shift": 0,
            "balanced_sampling": True,
            "autoguidance": True,
            "autoguidance_config": guide_yaml,
        },
    }


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """The release-style folder and the imported main model and guide."""
    root = tmp_path_factory.mktemp("release")
    meta = json.loads((FIXTURES / "upstream_config.json").read_text())
    mk, gk, tk = meta["model_kwargs"], meta["guide_model_kwargs"], meta["create_transport_kwargs"]
    state = load_file(str(FIXTURES / "state_dict.safetensors"))
    guide_state = load_file(str(FIXTURES / "guide_state_dict.safetensors"))
    ckpts = root / "outputs/train"
    main_pt = ckpts / "sfd_fixture/checkpoints/0400000.pt"
    guide_pt = ckpts / "sfd_fixture_guide/checkpoints/0070000.pt"
    for path, sd in ((main_pt, state), (guide_pt, guide_state)):
        path.parent.mkdir(parents=True)
        raw = {f"module.{k}": v + 0.05 for k, v in sd.items()}  # not the EMA: must not be used
        torch.save({"model": raw, "ema": sd}, path)
    tex = mk["in_channels"] - mk["semantic_chans"]
    lat = root / "outputs/dataset/latents"
    tex_ms = release_stats(lat / "latents_stats.pt", tex, 0.2)
    sem_ms = release_stats(lat / "latents_sv_stats.pt", mk["semantic_chans"], -0.3)
    guide_json = root / "guide_config.json"
    guide_json.write_text(json.dumps({"model_kwargs": gk, "create_transport_kwargs": tk}))
    inference = write_yaml(
        root / "configs/sfd/fixture/inference_autoguidance.yaml",
        release_inference_yaml(
            mk, tk, str(main_pt.relative_to(root)), "configs/sfd/fixture_guide/inference.yaml"
        ),
    )
    stats_args = ["--latent-stats", lat / "latents_stats.pt"]
    stats_args += ["--latent-stats", lat / "latents_sv_stats.pt"]
    common = [
        "import-upstream",
        main_pt,
        "--upstream-config",
        FIXTURES / "upstream_config.json",
        "--inference-config",
        inference,
        *stats_args,
    ]
    return {
        "root": root,
        "common": common,
        "main_pt": main_pt,
        "guide_pt": guide_pt,
        "guide_json": guide_json,
        "stats_args": stats_args,
        "stats": LatentStats(torch.cat([tex_ms[0], sem_ms[0]]), torch.cat([tex_ms[1], sem_ms[1]])),
        "direct": direct_model(mk, state),
        "direct_guide": direct_model(gk, guide_state)[0],
        "delta_t": mk["semfirst_delta_t"],
    }


def test_import_needs_the_autoguidance_scale(release, tmp_path):
    res = run(*release["common"], "--out", tmp_path / "no_scale")
    assert res.exit_code == 1 and "--cfg-scale" in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "no_scale").exists()


def test_release_folder_imports_and_samples_as_the_direct_model(release, tmp_path, caplog):
    imported, guide = tmp_path / "imported", tmp_path / "guide"
    res = run(*release["common"], "--cfg-scale", SCALE, "--out", imported)
    assert res.exit_code == 0, res.output
    res = run(
        "import-upstream",
        release["guide_pt"],
        "--upstream-config",
        release["guide_json"],
        *release["stats_args"],
        "--out",
        guide,
    )
    assert res.exit_code == 0, res.output

    # the YAML's sampler, as the release runs it, is the imported checkpoint's default
    release_sampler = SampleConfig(
        method="dopri5",
        num_steps=249,
        boundary="release",
        atol=1e-6,
        rtol=1e-3,
        cfg_scale_tex=SCALE,
        cfg_scale_sem=SCALE,
        guide="autoguidance",
    )
    ckpt = load_checkpoint(imported)[1]
    assert ckpt.config.sample == release_sampler
    assert torch.equal(ckpt.stats.mean, release["stats"].mean)
    assert torch.equal(ckpt.stats.std, release["stats"].std)

    # `sfd sample IMPORTED` says which sampler it runs; with AutoGuidance it needs --guide
    caplog.set_level(logging.INFO, logger="sfd.sampling")
    res = run("sample", imported, "--num", NUM, "--latents-only", "--out", tmp_path / "no_guide")
    assert res.exit_code == 1 and "needs a guide model (--guide RUN)" in res.output, res.output
    lines = [r.getMessage() for r in caplog.records if r.name == "sfd.sampling"]
    assert len(lines) == 1 and "the release's sampler" in lines[0], lines
    assert "AutoGuidance w 1.5" in lines[0] and "'release' boundary rule" in lines[0]

    # the release's dopri5 and boundary rule at loose tolerances (20 evaluations, not ~190)
    fast = ["--set", "sample.atol=1e-2", "--set", "sample.rtol=1e-2"]
    fast += ["--set", f"sample.compute_batch={NUM}"]
    res = run(
        "sample",
        imported,
        "--guide",
        guide,
        "--num",
        NUM,
        "--batch-size",
        NUM,
        "--latents-only",
        "--out",
        tmp_path / "samples",
        *fast,
    )
    assert res.exit_code == 0, res.output
    got = load_file(str(tmp_path / "samples/latents.safetensors"))

    # the same weights loaded directly, the same settings written out here
    model, model_cfg, latent_cfg = release["direct"]
    sample = dataclasses.replace(release_sampler, atol=1e-2, rtol=1e-2, compute_batch=NUM)
    cfg = Config(
        model=model_cfg,
        latent=latent_cfg,
        flow=FlowConfig(delta_t=release["delta_t"]),
        sample=sample,
    )
    stats = release["stats"]
    direct = LatentSampler(model, cfg, stats, release["direct_guide"])
    want = stats.denormalize(direct.sample(range(NUM), seed=0).final)
    assert torch.equal(got["latents"], want)
    assert torch.equal(got["labels"], torch.arange(NUM) % model_cfg.num_classes)

    # AutoGuidance acted: without the guide the same noise ends elsewhere
    plain = dataclasses.replace(sample, guide="cfg", cfg_scale_tex=1.0, cfg_scale_sem=1.0)
    unguided = LatentSampler(model, dataclasses.replace(cfg, sample=plain), stats)
    assert (stats.denormalize(unguided.sample(range(NUM), seed=0).final) - want).abs().max() > 1e-2
