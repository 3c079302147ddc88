"""The release's published settings by name: training recipes and samplers (docs/METHOD.md §3-§5).

A preset (:mod:`sfd.config`) is a backbone size. A recipe or a sampler is a named list of typed
``--set`` overrides applied on top of a config, so ``sfd train --preset XL --recipe
release-400k`` is exactly ``sfd train --preset XL --set ...`` with the overrides that
``sfd presets`` prints, and ``sfd sample RUN --sampler release`` is ``--set sample.*=...``.

Values: docs/METHOD.md §3 (the release's optimiser, objective, bf16 autocast, 400K steps = 80
epochs,
4M = 800 epochs, the 80-epoch re-run recipe), §4 (dopri5 atol 1e-6 rtol 1e-3 on the staged grid)
and §5.1 (the published sampler, its boundary rule, no CFG interval, and the AutoGuidance table
of the release's README). They agree with the release's YAML configs
(``configs/sfd/lightningdit_xl/inference_4m_autoguidance.yaml``, ``configs/sfd/autoguidance_b/
inference.yaml``: ``sampling_method: dopri5``, ``atol: 0.000001``, ``rtol: 0.001``,
``num_sampling_steps: 250``, ``cfg_interval_start: 0``, ``timestep_shift: 0``, ``lr: 0.0001``,
``beta2: 0.999``, ``global_batch_size: 256``, ``semfirst_delta_t: 0.3``, ``semantic_weight:
2.0``, ``repa_feat_depth: 2``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from sfd.config import Config, SampleConfig, apply_overrides, preset
from sfd.flow.solvers import solver


@dataclass(frozen=True)
class Setting:
    """A named setting: typed overrides, what it reproduces, and the backbone it is made for."""

    overrides: tuple[str, ...]
    note: str
    backbone: str | None = None  # preset whose backbone the setting needs; None: any


def _settings(base: dict[str, str], **changes: str) -> tuple[str, ...]:
    """``base`` with ``changes`` (keys use ``__`` for ``.``) as ``key=value`` strings."""
    merged = {**base, **{k.replace("__", "."): v for k, v in changes.items()}}
    return tuple(f"{k}={v}" for k, v in merged.items())


# docs/METHOD.md §3: AdamW lr 1e-4, betas (0.9, 0.999), no weight decay, constant lr, global batch
# 256,
# EMA 0.9999 every step, bf16 autocast, no grad clip; Δt 0.3, logit-normal times, β 2, cosine
# loss weight 1, REPA λ 1 'cos' on block 2 (§2.8), label dropout 0.1 (§2.5); no clamp mask (§3.7).
_RELEASE_TRAINING = {
    "train.global_batch_size": "256",
    "train.lr": "1e-4",
    "train.beta1": "0.9",
    "train.beta2": "0.999",
    "train.weight_decay": "0",
    "train.grad_clip": "0",
    "train.ema_decay": "0.9999",
    "train.precision": "bf16",
    "train.total_steps": "400000",
    "flow.delta_t": "0.3",
    "flow.time_dist": "logit_normal",
    "flow.sem_weight": "2.0",
    "flow.cos_weight": "1.0",
    "flow.repa_weight": "1.0",
    "flow.repa_mode": "cos",
    "flow.mask_clamped": "false",
    "model.repa_depth": "2",
    "model.class_dropout_prob": "0.1",
}

RECIPES: dict[str, Setting] = {
    "release-400k": Setting(
        _settings(_RELEASE_TRAINING),
        "the release's recipe, 400K steps = 80 epochs at batch 256 (Table 1 '400K')",
    ),
    "release-80ep": Setting(
        _settings(
            _RELEASE_TRAINING,
            train__lr="2e-4",
            train__beta2="0.95",
            flow__repa_weight="0.5",
            flow__repa_mode="cos_mse",
        ),
        "the release's 80-epoch re-run recipe: lr 2e-4, beta2 0.95, REPA 0.5 cos_mse, 400K steps",
    ),
    "release-800ep": Setting(
        _settings(_RELEASE_TRAINING, train__total_steps="4000000"),
        "the release's recipe, 4M steps = 800 epochs (Table 1 '4M')",
    ),
    # §5.1: the guide is an SFD-B/1 trained with the same recipe; the published guides are its
    # checkpoints at 60K, 70K and 120K steps, so it runs to 120K and saves every 10K.
    "release-guide": Setting(
        _settings(_RELEASE_TRAINING, train__total_steps="120000", train__ckpt_every="10000"),
        "the AutoGuidance guide: SFD-B/1, same recipe, checkpoints at 60K / 70K / 120K",
        backbone="B",
    ),
}

# docs/METHOD.md §4, §5.1: dopri5 (atol 1e-6, rtol 1e-3) over the staged grid with the release's
# boundary rule; num_sampling_steps 250 grid points (249 steps) only fixes the output grid;
# no timestep shift; cfg_scale 1.0 and cfg_interval_start 0 (no interval) in every config.
_RELEASE_SAMPLER = {
    "sample.method": "dopri5",
    "sample.atol": "1e-6",
    "sample.rtol": "1e-3",
    "sample.boundary": "release",
    "sample.num_steps": "249",
    "sample.timestep_shift": "0",
    "sample.guide": "cfg",
    "sample.cfg_scale_tex": "1.0",
    "sample.cfg_scale_sem": "1.0",
    "sample.cfg_interval_tex": "0,1",
    "sample.cfg_interval_sem": "0,1",
}


def _autoguided(scale: str) -> tuple[str, ...]:
    return _settings(
        _RELEASE_SAMPLER,
        sample__guide="autoguidance",
        sample__cfg_scale_tex=scale,
        sample__cfg_scale_sem=scale,
    )


# §5.1, the release README's AutoGuidance table: main model, epochs -> guide checkpoint, scale.
SAMPLERS: dict[str, Setting] = {
    "release": Setting(
        _settings(_RELEASE_SAMPLER),
        "the release's sampler without guidance (Table 1)",
    ),
    "release-ag-xl-80ep": Setting(
        _autoguided("1.6"), "AutoGuidance for SFD-XL 80 epochs: --guide the B/1 guide at 70K, w 1.6"
    ),
    "release-ag-xl-800ep": Setting(
        _autoguided("1.5"),
        "AutoGuidance for SFD-XL 800 epochs: --guide the B/1 guide at 70K, w 1.5",
    ),
    "release-ag-xxl-80ep": Setting(
        _autoguided("1.5"),
        "AutoGuidance for SFD-XXL 80 epochs: --guide the B/1 guide at 60K, w 1.5",
    ),
    "release-ag-xxl-800ep": Setting(
        _autoguided("1.5"),
        "AutoGuidance for SFD-XXL 800 epochs: --guide the B/1 guide at 120K, w 1.5",
    ),
}


def _lookup(table: dict[str, Setting], name: str, kind: str) -> Setting:
    if name not in table:
        raise ValueError(f"unknown {kind} {name!r}; expected one of {', '.join(table)}")
    return table[name]


def apply_recipe(cfg: Config, name: str) -> Config:
    """``cfg`` with the training recipe ``name``; its preset name records the recipe."""
    setting = _lookup(RECIPES, name, "recipe")
    if setting.backbone is not None:
        want, got = preset(setting.backbone).model, cfg.model
        shape = ("depth", "width", "num_heads", "patch_size")
        if any(getattr(want, k) != getattr(got, k) for k in shape):
            raise ValueError(
                f"recipe {name!r} trains the {setting.backbone} backbone; use "
                f"--preset {setting.backbone} (got depth {got.depth}, width {got.width})"
            )
    out = apply_overrides(cfg, list(setting.overrides))
    return dataclasses.replace(out, preset=f"{cfg.preset}+{name}")


def apply_sampler(cfg: Config, name: str) -> Config:
    """``cfg`` with the sampling setting ``name`` (it changes ``sample.*`` only)."""
    return apply_overrides(cfg, list(_lookup(SAMPLERS, name, "sampler").overrides))


def is_release_sampler(sample: SampleConfig) -> bool:
    """Whether ``sample`` integrates as the release's published numbers do (docs/METHOD.md §5.1):
    the solver, boundary rule, tolerances and shift of the ``release`` sampler."""
    release = apply_sampler(Config(), "release").sample
    same = ("method", "boundary", "atol", "rtol", "timestep_shift")
    return all(getattr(sample, k) == getattr(release, k) for k in same)


def describe_sampler(sample: SampleConfig) -> str:
    """One line: solver, boundary rule and guidance of ``sample``."""
    if solver(sample.method).fixed_step:
        solved = f"{sample.method}, {sample.num_steps} steps"
    else:
        solved = f"{sample.method} (atol {sample.atol:g}, rtol {sample.rtol:g})"
    if sample.timestep_shift:
        solved += f", timestep shift {sample.timestep_shift:g}"
    scales = f"{sample.cfg_scale_tex:g} (texture) / {sample.cfg_scale_sem:g} (semantic)"
    kind = "AutoGuidance" if sample.guide == "autoguidance" else "CFG"
    guidance = f"{kind} w {scales}"
    if sample.guide == "cfg" and (sample.cfg_scale_tex, sample.cfg_scale_sem) == (1.0, 1.0):
        guidance = "no guidance"
    elif (sample.cfg_interval_tex, sample.cfg_interval_sem) != ((0.0, 1.0), (0.0, 1.0)):
        guidance += f", intervals {sample.cfg_interval_tex} / {sample.cfg_interval_sem}"
    return f"{solved}, {sample.boundary!r} boundary rule, {guidance}"
