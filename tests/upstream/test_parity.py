"""Parity with tensors produced by the official SFD release (tests/fixtures/upstream_parity).

Everything is driven by the fixture set itself: the model configs come from
``upstream_config.json`` through :mod:`sfd.upstream`, and the cases are discovered from the key
names in ``cases.safetensors`` (so another fixture set with another configuration is checked the
same way). Tolerances are the fixture README's: atol 1e-5 (1e-4 for debug intermediates),
``dopri5_tight`` 1e-3, released-tolerance ``dopri5`` loosely (max abs 0.5, relative L2 0.1).
"""

from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors.torch import load_file

from sfd.flow.guidance import Guidance, autoguidance_velocity, cfg_velocity, plain_velocity
from sfd.flow.path import logit_normal
from sfd.flow.schedule import staged_schedule
from sfd.flow.solvers import dopri5, euler
from sfd.latents.composite import LatentLayout
from sfd.model import LightningDiT
from sfd.training.loss import flow_loss
from sfd.upstream import config_from_kwargs, import_upstream, interval_for_mode
from tests.helpers import FIXTURES

ATOL = 1e-5


@pytest.fixture(scope="module")
def fx():
    # the set ships with the repository: a missing file is a failure, never a skip
    assert (FIXTURES / "cases.safetensors").exists(), f"no upstream fixture set in {FIXTURES}"
    meta = json.loads((FIXTURES / "upstream_config.json").read_text())
    cases = load_file(str(FIXTURES / "cases.safetensors"))
    cfg = config_from_kwargs(meta["model_kwargs"], meta["create_transport_kwargs"])
    gcfg = config_from_kwargs(meta["guide_model_kwargs"], meta["create_transport_kwargs"])
    model = LightningDiT.from_configs(cfg.model, cfg.latent)
    model.load_state_dict(load_file(str(FIXTURES / "state_dict.safetensors")), strict=True)
    guide = LightningDiT.from_configs(gcfg.model, gcfg.latent)
    guide.load_state_dict(load_file(str(FIXTURES / "guide_state_dict.safetensors")), strict=True)
    layout = LatentLayout(cfg.latent.tex_channels, cfg.latent.sem_channels)
    torch.set_grad_enabled(False)
    yield {
        "meta": meta,
        "cases": cases,
        "cfg": cfg,
        "model": model.eval(),
        "guide": guide.eval(),
        "layout": layout,
    }
    torch.set_grad_enabled(True)


def close(a: torch.Tensor, b: torch.Tensor, atol: float = ATOL) -> None:
    assert a.shape == b.shape
    err = (a - b).abs().max().item()
    assert err <= atol, f"max abs error {err:.3g} > {atol}"


def scale_of(token: str) -> float:
    return float(token.replace("p", "."))


def test_recomputed_tables_equal_stored(fx):
    fresh = LightningDiT.from_configs(fx["cfg"].model, fx["cfg"].latent).state_dict()
    stored = load_file(str(FIXTURES / "state_dict.safetensors"))
    for key in ("pos_embed", "feat_rope.freqs_cos", "feat_rope.freqs_sin"):
        assert torch.equal(fresh[key], stored[key]), key
    assert sum(v.numel() for v in stored.values()) == fx["meta"]["n_params_state_dict"]


def test_forward_and_debug_intermediates(fx):
    c, m = fx["cases"], fx["model"]
    out = m(c["fwd.x"], t_tex=c["fwd.t_tex"], t_sem=c["fwd.t_sem"], y=c["fwd.y"])
    close(out, c["fwd.out"])
    x0, tt, ts, y0 = c["fwd.x"][:1], c["fwd.t_tex"][:1], c["fwd.t_sem"][:1], c["fwd.y"][:1]
    if m.config.dual_timestep:
        close(m.t_embedder_sem(ts), c["fwd.dbg.t_emb_sem"], 1e-4)
        close(m.t_embedder_tex(tt), c["fwd.dbg.t_emb_tex"], 1e-4)
    close(m.x_embedder(x0), c["fwd.dbg.x_embed_nopos"], 1e-4)
    close(m.y_embedder(y0), c["fwd.dbg.y_emb"], 1e-4)
    cond = m.condition(tt, ts, y0)
    close(cond, c["fwd.dbg.c"], 1e-4)
    tokens = m.x_embedder(x0) + m.pos_embed
    for i, block in enumerate(m.blocks):
        tokens = block(tokens, cond, m.feat_rope)
        if f"fwd.dbg.block{i}_out" in c:
            close(tokens, c[f"fwd.dbg.block{i}_out"], 1e-4)
    close(m.final_layer(tokens, cond), c["fwd.dbg.final_tokens"], 1e-4)


def test_train_forward_returns_repa_projection(fx):
    c, m = fx["cases"], fx["model"]
    out, proj = m(
        c["train_fwd.x"],
        t_tex=c["train_fwd.t_tex"],
        t_sem=c["train_fwd.t_sem"],
        y=c["train_fwd.y"],
        return_repa=True,
    )
    close(out, c["train_fwd.out"])
    close(proj, c["train_fwd.repa_proj"])


def _loss(fx, **flow_changes):
    import dataclasses

    c = fx["cases"]
    flow = dataclasses.replace(fx["cfg"].flow, **flow_changes)
    return flow_loss(
        fx["model"].train(),
        c["loss.x1"],
        c["loss.y"],
        x0=c["loss.x0"],
        base_time=logit_normal(c["loss.n_normal"]),
        flow=flow,
        layout=fx["layout"],
        repa_target=c["loss.feature_dino"],
    )


def test_loss_terms(fx):
    c = fx["cases"]
    assert torch.equal(logit_normal(c["loss.n_normal"]), c["loss.t_base"])
    terms = _loss(fx)
    fx["model"].eval()
    assert torch.equal(terms.t_tex, c["loss.t_tex"]) and torch.equal(terms.t_sem, c["loss.t_sem"])
    close(terms.x_t, c["loss.xt"], 3e-7)
    close(terms.target, c["loss.ut"], 3e-7)
    close(terms.pred, c["loss.pred"])
    close(terms.vel, c["loss.loss_mse"])
    close(terms.cos, c["loss.loss_cos"])
    close(terms.repa, c["loss.loss_repa"])
    close(terms.total(fx["cfg"].flow.cos_weight), c["loss.total"])


def test_loss_variants(fx):
    c = fx["cases"]
    checked = []
    for key in c:
        if m := re.fullmatch(r"loss\.repa_mode_(cos|mse|cos_mse)_w(\w+)", key):
            close(_loss(fx, repa_mode=m.group(1), repa_weight=scale_of(m.group(2))).repa, c[key])
            checked.append(key)
        elif m := re.fullmatch(r"loss\.loss_mse_beta(\w+)", key):
            close(_loss(fx, sem_weight=scale_of(m.group(1))).vel, c[key])
            checked.append(key)
    fx["model"].eval()
    # a fixture set without variants, or with one this test cannot read, must fail, not pass
    assert checked, "no loss variant (loss.repa_mode_*_w*, loss.loss_mse_beta*) in the fixture set"
    unread = {k for k in c if k.startswith(("loss.repa_mode_", "loss.loss_mse_"))} - set(checked)
    assert not unread, f"loss variants this test does not understand: {sorted(unread)}"


def _euler_cases(cases) -> list[tuple[str, int, str]]:
    found = []
    for key in cases:
        if m := re.fullmatch(r"samp\.euler(\d+)(_\w+)?\.final", key):
            found.append((key, int(m.group(1)), m.group(2) or ""))
    assert found, "no Euler cases in the fixture set"
    return found


def test_euler_grids_times_and_finals(fx):
    c, meta, layout, m = fx["cases"], fx["meta"], fx["layout"], fx["model"]
    delta_t = fx["cfg"].flow.delta_t
    shift = meta["sampler_settings_used"].get("timestep_shift_case", 0.0)
    for key, points, variant in _euler_cases(c):
        z, y = c["samp.z"], c["samp.y"]
        sched = staged_schedule(
            points - 1, delta_t, shift if variant == "_shift" else 0.0, boundary="release"
        )
        prefix = key.removesuffix(".final")
        if f"{prefix}.tau_grid" in c:
            assert torch.equal(sched.tau, c[f"{prefix}.tau_grid"]), prefix
        if f"{prefix}.eval_t_tex" in c:
            assert torch.equal(sched.t_tex[:-1], c[f"{prefix}.eval_t_tex"]), prefix
            assert torch.equal(sched.t_sem[:-1], c[f"{prefix}.eval_t_sem"]), prefix
        if variant.startswith("_cfg"):
            w = scale_of(variant[4:])
            fn = cfg_velocity(m, y, Guidance(w, w), layout)
            ref = c[key][: z.shape[0]]
        elif variant.startswith("_ag"):
            w = scale_of(variant[3:])
            fn = autoguidance_velocity(m, fx["guide"], y, Guidance(w, w), layout)
            ref = c[key]
        else:
            fn, ref = plain_velocity(m, y), c[key]
        sol = euler(fn, z, sched, layout, keep_trajectory=f"{prefix}.traj" in c)
        close(sol.final, ref)
        if f"{prefix}.traj" in c:
            close(torch.stack(sol.trajectory), c[f"{prefix}.traj"])


def test_dopri5(fx):
    c, layout = fx["cases"], fx["layout"]
    settings = fx["meta"]["sampler_settings_used"]
    fn = plain_velocity(fx["model"], c["samp.y"])
    delta_t = fx["cfg"].flow.delta_t
    tight = settings["dopri5_tight"]
    close(
        dopri5(fn, c["samp.z"], delta_t, layout, tight["atol"], tight["rtol"]).final,
        c["samp.dopri5_tight.final"],
        1e-3,
    )
    loose = settings["dopri5"]
    out = dopri5(fn, c["samp.z"], delta_t, layout, loose["atol"], loose["rtol"]).final
    ref = c["samp.dopri5.final"]
    assert (out - ref).abs().max() <= 0.5
    assert (out - ref).norm() / ref.norm() <= 0.1


def _guided_per_item(cond, base, w, start, mode, t_tex, t_sem, layout):
    """Reference algebra, deciding the interval per item (the release uses item 0 for all)."""
    tex_iv, sem_iv = interval_for_mode(start, mode)
    g = Guidance(w, w, tex_iv, sem_iv)
    weights = g.weights(t_tex, t_sem, cond.shape[0], layout, cond)
    return (
        cond if weights is None else torch.where(weights == 1, cond, base + weights * (cond - base))
    )


def _item0_agrees(start, mode, t_tex, t_sem):
    tex_iv, sem_iv = interval_for_mode(start, mode)
    item = [
        (t_tex >= tex_iv[0]) == (t_tex[0] >= tex_iv[0]),
        (t_sem >= sem_iv[0]) == (t_sem[0] >= sem_iv[0]),
    ]
    return item[0] & item[1]


def _guidance_cases(c, prefix, meta):
    starts = meta.get("guidance_cases", {})
    for key in c:
        m = re.fullmatch(
            rf"{prefix}\.out_scale(\w+?)(_sem\w+_tex\w+)?(_interval_(\w+?))?"
            rf"(_mode_(tex|sem))?",
            key,
        )
        if not m:
            continue
        scale = scale_of(m.group(1))
        start = None
        if m.group(4):
            start = {"zero": 0.0}.get(m.group(4), starts.get(f"cfg_interval_start_{m.group(4)}"))
        yield (
            key,
            scale,
            m.group(2),
            start,
            m.group(6) or meta["model_kwargs"].get("semfirst_infer_interval_mode", "both"),
        )


def test_cfg_cases(fx):
    c, layout, m, meta = fx["cases"], fx["layout"], fx["model"], fx["meta"]
    b = c["cfg.x"].shape[0] // 2
    x, y = c["cfg.x"][:b], c["cfg.y"][:b]
    t_tex, t_sem = c["cfg.t_tex"][:b], c["cfg.t_sem"][:b]
    close(m(c["cfg.x"], t_tex=c["cfg.t_tex"], t_sem=c["cfg.t_sem"], y=c["cfg.y"]), c["cfg.raw_out"])
    cond, uncond = c["cfg.raw_out"][:b], c["cfg.raw_out"][b:]
    seen = 0
    for key, w, _, start, mode in _guidance_cases(c, "cfg", meta):
        seen += 1
        tex_iv, sem_iv = interval_for_mode(start or 0.0, mode)
        out = cfg_velocity(m, y, Guidance(w, w, tex_iv, sem_iv), layout)(x, t_tex, t_sem)
        assert torch.equal(c[key][:b], c[key][b:])
        agree = _item0_agrees(start or 0.0, mode, t_tex, t_sem)
        close(out[agree], c[key][:b][agree])
        close(out, _guided_per_item(cond, uncond, w, start or 0.0, mode, t_tex, t_sem, layout))
    assert seen


def test_autoguidance_cases(fx):
    c, layout, m, meta = fx["cases"], fx["layout"], fx["model"], fx["meta"]
    x, y, t_tex, t_sem = c["ag.x"], c["ag.y"], c["ag.t_tex"], c["ag.t_sem"]
    close(m(x, t_tex=t_tex, t_sem=t_sem, y=y), c["ag.main_out"])
    close(fx["guide"](x, t_tex=t_tex, t_sem=t_sem, y=y), c["ag.guide_out"])
    seen = 0
    for key, w, sep, start, mode in _guidance_cases(c, "ag", meta):
        seen += 1
        w_tex = w_sem = w
        if sep:
            sm = re.fullmatch(r"_sem(\w+)_tex(\w+)", sep)
            w_sem, w_tex = scale_of(sm.group(1)), scale_of(sm.group(2))
        tex_iv, sem_iv = interval_for_mode(start or 0.0, mode)
        g = Guidance(w_tex, w_sem, tex_iv, sem_iv)
        out = autoguidance_velocity(m, fx["guide"], y, g, layout)(x, t_tex, t_sem)
        agree = _item0_agrees(start or 0.0, mode, t_tex, t_sem)
        close(out[agree], c[key][agree])
    assert seen


def test_import_upstream_roundtrip(fx, tmp_path):
    from safetensors.torch import save_file

    import sfd

    pt = tmp_path / "release.pt"
    state = load_file(str(FIXTURES / "state_dict.safetensors"))
    torch.save({"ema": state, "model": {f"module.{k}": v for k, v in state.items()}}, pt)
    for weights, src in (("ema", pt), ("model", pt)):
        out = import_upstream(
            src, FIXTURES / "upstream_config.json", tmp_path / weights, prefer=weights
        )
        model = sfd.load_model(out).model
        assert not model.training
        c = fx["cases"]
        close(
            model(c["fwd.x"], t_tex=c["fwd.t_tex"], t_sem=c["fwd.t_sem"], y=c["fwd.y"]),
            c["fwd.out"],
        )
    st = tmp_path / "release.safetensors"
    save_file(state, str(st))
    loaded = sfd.load_model(import_upstream(st, FIXTURES / "upstream_config.json", tmp_path / "st"))
    want = LightningDiT.from_configs(fx["cfg"].model, fx["cfg"].latent)
    assert loaded.model.arguments() == want.arguments()


def test_loss_variants_fails_on_a_set_without_variants(fx):
    variants = ("loss.repa_mode_", "loss.loss_mse_")
    cases = {k: v for k, v in fx["cases"].items() if not k.startswith(variants)}
    with pytest.raises(AssertionError, match="no loss variant"):
        test_loss_variants({**fx, "cases": cases})
