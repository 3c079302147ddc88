"""The config of a training run: where it comes from, and how it meets its data.

A run's config starts from one of three places: the run directory's stored ``config.json``
(a rerun resumes: the stored config wins), a ``--config`` file, or a named preset (with an
optional recipe). ``--set`` overrides come last. Then :func:`fit_to_data` takes what the latent
set decides (its shape, classes, REPA feature dim and texture decoder) from its ``meta.json``:
values the user did not set explicitly follow the data; an explicit value that disagrees is an
error naming both. Finally :func:`short_run_ema` scales the EMA decay of a short run (below).

EMA for short runs: the default ``train.ema_decay`` (0.9999, the release's, a half-life of
6,931 steps) would leave a 150-step run's EMA weights at their initial values. When the decay
is the library default and not set explicitly, it is lowered so that the EMA half-life is at
most a tenth of ``train.total_steps``: ``decay = 0.5 ** (1 / (total_steps / 10))`` (0.955 for
150 steps; unchanged for runs of 69,315 steps or more). A preset's own decay (``demo``: 0.99)
is a choice and is kept.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

from sfd.config import Config, TrainConfig, apply_overrides, load_config_file, preset
from sfd.errors import BadInputError, MismatchError, OverrideError
from sfd.recipes import apply_recipe
from sfd.training.checkpoint import list_checkpoints
from sfd.training.schedule_file import with_schedule_file

log = logging.getLogger(__name__)

# config keys a latent set decides, and where its meta.json holds them
DATA_KEYS = {
    "latent.tex_channels": "tex_channels",
    "latent.sem_channels": "sem_channels",
    "latent.size": "size",
    "model.num_classes": "num_classes",
    "model.repa_dim": "repa_dim",
}
ALL_KEYS = "*"  # every key is explicit (a --config file or a stored run config)


def override_keys(overrides: list[str] | tuple[str, ...]) -> set[str]:
    """The ``section.key`` names that ``--set`` overrides set."""
    return {item.split("=", 1)[0].strip() for item in overrides}


def _is_explicit(key: str, explicit: set[str] | str) -> bool:
    return explicit == ALL_KEYS or key in explicit


def _get(cfg: Config, key: str) -> Any:
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)


def _set(cfg: Config, key: str, value: Any) -> Config:
    section, name = key.split(".")
    part = dataclasses.replace(getattr(cfg, section), **{name: value})
    return dataclasses.replace(cfg, **{section: part})


def data_decoder(meta: dict) -> str:
    """The texture autoencoder a latent set was extracted with ('' when unknown); a relative
    path that exists from the current directory is made absolute."""
    extraction = meta.get("extraction", {})
    path = extraction.get("texture_ae_path") or extraction.get("texture_ae", {}).get("path")
    if not path:
        return ""
    p = Path(path)
    return str(p.resolve()) if not p.is_absolute() and p.exists() else str(path)


def fit_to_data(cfg: Config, meta: dict, explicit: set[str] | str, data_dir: str | Path) -> Config:
    """``cfg`` with the latent shape, classes, REPA dim and decoder of the latent set ``meta``
    (module docstring); ``ValueError`` naming both values where an explicit key disagrees."""
    for key, field in DATA_KEYS.items():
        want, have = int(meta[field]), _get(cfg, key)
        if want == have or (key == "model.repa_dim" and have == 0 and _is_explicit(key, explicit)):
            continue  # an explicit repa_dim 0 turns REPA off whatever the data holds
        if _is_explicit(key, explicit):
            source = "the run's config" if explicit == ALL_KEYS else "--set"
            raise MismatchError(
                f"latent data {data_dir} has {key} = {want}; {source} sets {have} "
                f"(leave it unset to take the data's value, or use data that matches)"
            )
        log.info("%s = %s from %s (was %s)", key, want, data_dir, have)
        cfg = _set(cfg, key, want)
    decoder = data_decoder(meta)
    key = "latent.texture_autoencoder"
    if decoder and not cfg.latent.texture_autoencoder and not _is_explicit(key, explicit):
        log.info("%s = %s from %s", key, decoder, data_dir)
        cfg = _set(cfg, key, decoder)
    return cfg


def short_run_ema(cfg: Config, explicit: set[str] | str) -> Config:
    """Lower the default EMA decay of a short run (module docstring)."""
    default = TrainConfig.ema_decay
    if _is_explicit("train.ema_decay", explicit) or cfg.train.ema_decay != default:
        return cfg
    half_life = max(1.0, cfg.train.total_steps / 10)
    decay = min(default, 0.5 ** (1 / half_life))
    if decay < default:
        log.info(
            "train.ema_decay = %.6f (half-life %.0f steps: a tenth of the %d-step run)",
            decay,
            half_life,
            cfg.train.total_steps,
        )
        cfg = _set(cfg, "train.ema_decay", decay)
    return cfg


def _stored_base(run_dir: Path, preset_name: str | None, recipe: str | None) -> Config | None:
    """The config stored in ``run_dir`` if it holds checkpoints (a run to resume), else None."""
    path = run_dir / "config.json"
    if not path.exists() or not list_checkpoints(run_dir):
        return None
    stored = load_config_file(path)
    names = stored.preset.split("+")
    if (preset_name and names[0] != preset_name) or (recipe and recipe not in names[1:]):
        raise MismatchError(
            f"{run_dir} holds a run of preset {stored.preset!r}; rerun without --preset/--recipe "
            f"to resume it, or use a new --out"
        )
    log.info("resuming %s with its stored config", run_dir)
    return stored


def resolve_train_config(
    preset_name: str | None = None,
    config_file: str | Path | None = None,
    recipe: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    data_dir: str | Path | None = None,
    run_dir: str | Path | None = None,
) -> Config:
    """The config ``sfd train`` runs with (module docstring). Writes nothing."""
    explicit: set[str] | str
    stored = _stored_base(Path(run_dir), preset_name, recipe) if run_dir else None
    if config_file is not None:
        cfg, explicit = load_config_file(config_file), ALL_KEYS
    elif stored is not None:
        cfg, explicit = stored, ALL_KEYS
    else:
        cfg, explicit = preset(preset_name or "tiny"), set()
        cfg = apply_recipe(cfg, recipe) if recipe else cfg
    try:
        cfg = apply_overrides(cfg, list(overrides))
    except ValueError as err:  # ConfigError included: the --set values are what is wrong
        raise OverrideError(str(err)) from None
    if explicit != ALL_KEYS:
        explicit = override_keys(overrides)
    if data_dir is not None:
        cfg = fit_to_data(cfg, _data_meta(data_dir), explicit, data_dir)
    return short_run_ema(with_schedule_file(cfg), explicit)


def _data_meta(data_dir: str | Path) -> dict:
    path = Path(data_dir) / "meta.json"
    if not path.exists():
        raise FileNotFoundError(
            f"{data_dir} is not a latent shard directory (no meta.json); write one with "
            f"`sfd extract`"
        )
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise BadInputError(
            f"{path} is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})"
        ) from None
