"""``sfd train``, ``sfd presets``, ``sfd import-upstream``: the diffusion model's commands."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click
import torch

from sfd import distributed
from sfd.cli.options import (
    COUNT,
    FINITE,
    NON_NEGATIVE,
    SEED,
    device_option,
    dry_run_option,
    no_verify_option,
    resolve_device,
    set_option,
)
from sfd.config import PRESETS, preset
from sfd.errors import OverrideError, SfdError
from sfd.model import LightningDiT, count_parameters
from sfd.recipes import RECIPES, SAMPLERS
from sfd.training.probe import ProbeSettings, learn_schedule
from sfd.training.run_config import resolve_train_config
from sfd.training.run_dir import validate_run
from sfd.upstream import import_upstream


@click.command("train")
@click.option(
    "--preset",
    "preset_name",
    type=click.Choice(PRESETS),
    default=None,
    help="Named model preset (default tiny).",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False),
    help="A config.json to start from instead of a preset.",
)
@click.option(
    "--recipe",
    type=click.Choice(tuple(RECIPES)),
    default=None,
    help="A published training recipe on top of the preset (sfd presets lists them).",
)
@set_option
@click.option(
    "--data",
    type=click.Path(file_okay=False),
    help="Latent shard directory; its meta.json sets latent.*, model.num_classes, "
    "model.repa_dim and the decoder unless --set sets them.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    help="Run directory; a plain rerun resumes it with its stored config.",
)
@device_option()
@click.option(
    "--max-steps", type=NON_NEGATIVE, default=None, help="Stop after this many more steps."
)
@no_verify_option
@dry_run_option("the resolved config (checked against --data)")
def train_command(
    preset_name, config_file, recipe, overrides, data, out, device, max_steps, no_verify, dry_run
) -> None:
    """Train SFD on pre-computed latents (a rerun resumes RUN from its stored config)."""
    if data and not (Path(data) / "meta.json").exists():
        raise click.BadParameter(
            f"{data} is not a latent shard directory (no meta.json)", param_hint="--data"
        )
    try:
        cfg = resolve_train_config(preset_name, config_file, recipe, overrides, data, out)
    except OverrideError as err:
        raise click.UsageError(str(err)) from None
    except SfdError:  # a bad config file, data that conflicts: the policy's own exit codes
        raise
    except (ValueError, FileNotFoundError) as err:  # a bad --set
        raise click.UsageError(str(err)) from None
    if dry_run:
        if data:
            validate_run(cfg, data)
        click.echo(cfg.to_json())
        return
    if not data or not out:
        raise click.UsageError("--data and --out are required (or use --dry-run)")
    # lazy: the training loop imports torch.distributed.checkpoint (~1.5 s): not for --help
    from sfd.training.loop import train as run_training

    with distributed.process_group(resolve_device(device)) as dev:
        result = run_training(cfg, data, out, device=dev, max_steps=max_steps, verify=not no_verify)
    if distributed.is_main():
        click.echo(
            f"trained to step {result.step} in {result.run_dir} "
            f"({result.skipped_steps} non-finite steps skipped)"
        )


@click.command("import-upstream")
@click.argument("ckpt", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--upstream-config",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Release YAML config or JSON of LightningDiT(...) arguments.",
)
@click.option("--out", required=True, type=click.Path(file_okay=False))
@click.option(
    "--latent-stats",
    type=click.Path(exists=True, dir_okay=False),
    multiple=True,
    help="The release's latents_stats.pt then latents_sv_stats.pt (give the option twice), "
    "or one mean/std file for all channels; travels with the checkpoint.",
)
@click.option("--weights", type=click.Choice(["ema", "model"]), default="ema", show_default=True)
@click.option(
    "--inference-config",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="A release inference YAML whose sample section becomes the checkpoint's sampler "
    "(default: --upstream-config's, if it is a YAML).",
)
@click.option(
    "--cfg-scale",
    type=FINITE,
    default=None,
    help="The release's CFG_SCALE: replaces the YAML's cfg_scale (the AutoGuidance scale "
    "when the YAML sets autoguidance: true).",
)
def import_upstream_command(
    ckpt, upstream_config, out, latent_stats, weights, inference_config, cfg_scale
) -> None:
    """Turn an official SFD release checkpoint into an sfd checkpoint directory."""
    path = import_upstream(
        ckpt, upstream_config, out, latent_stats or None, weights, inference_config, cfg_scale
    )
    click.echo(f"imported {ckpt} -> {path}")


@click.command("presets")
def presets_command() -> None:
    """List presets with their sizes (built on the meta device), recipes and samplers."""
    for name in PRESETS:
        cfg = preset(name)
        with torch.device("meta"):
            n = count_parameters(LightningDiT.from_configs(cfg.model, cfg.latent))
        m = dataclasses.asdict(cfg.model)
        click.echo(
            f"{name:>4}: depth {m['depth']:>2} width {m['width']:>4} heads "
            f"{m['num_heads']:>2}  {n / 1e6:8.1f}M params"
        )
    for title, table in (
        ("recipes (sfd train --preset P --recipe R)", RECIPES),
        ("samplers (sfd sample RUN --sampler S)", SAMPLERS),
    ):
        click.echo(f"\n{title}:")
        for name, setting in table.items():
            only = f" [--preset {setting.backbone}]" if setting.backbone else ""
            click.echo(f"  {name}{only}: {setting.note}")
            click.echo(f"    {' '.join(setting.overrides)}")


@click.command("learn-schedule")
@click.option(
    "--data",
    required=True,
    type=click.Path(file_okay=False),
    help="Latent shard directory (texture and semantic channels).",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False),
    help="The schedule file to write (JSON); its picture goes beside it as .png.",
)
@click.option("--steps", type=COUNT, default=200, show_default=True, help="Probe steps.")
@click.option("--batch", type=NON_NEGATIVE, default=64, show_default=True, help="Probe batch size.")
@click.option("--lam", type=FINITE, default=0.1, show_default=True, help="Kinetic-energy weight λ.")
@click.option(
    "--knots", type=NON_NEGATIVE, default=8, show_default=True, help="Segments per curve."
)
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option(
    "--init-delta-t",
    type=FINITE,
    default=0.0,
    show_default=True,
    help="Start from SFD's offset Δt (0: synchronous).",
)
@click.option(
    "--order",
    type=click.Choice(["free", "semantics-first"]),
    default="free",
    show_default=True,
    help="free: either part may lead; semantics-first: texture never ahead.",
)
def learn_schedule_command(data, out, steps, batch, lam, knots, seed, init_delta_t, order) -> None:
    """Learn when to denoise each part: a short probe on LATENTS writes a schedule file for
    `sfd train --set flow.schedule_file=FILE` (docs/SCHEDULE.md)."""
    settings = ProbeSettings(
        steps=steps,
        batch=batch,
        lam=lam,
        knots=knots,
        seed=seed,
        init_delta_t=init_delta_t,
        order=order,
    )
    doc = learn_schedule(data, out, settings)
    click.echo(
        f"wrote {out} (lead at the middle of the path: {doc['lead_at_middle']:.3f}; "
        f"probe {doc['probe']['seconds']:.0f} s) and {Path(out).with_suffix('.png')}"
    )


COMMANDS = (train_command, import_upstream_command, presets_command, learn_schedule_command)
