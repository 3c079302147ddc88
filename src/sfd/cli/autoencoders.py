"""``sfd train-semvae``, ``sfd train-texture-vae``, ``sfd import-upstream-semvae``: the latent
space's autoencoders. Training options are generated from the config dataclasses, one option
per field with the config's default."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, fields

import click

from sfd.cli.options import (
    COUNT,
    FINITE,
    NON_NEGATIVE,
    POSITIVE,
    SEED,
    dataset_of,
    dataset_options,
    device_option,
    dry_run_option,
    no_verify_option,
    resolve_device,
)
from sfd.config import SemVAETrainConfig, TextureVAETrainConfig
from sfd.latents.semvae import SemVAEConfig
from sfd.latents.upstream_semvae import import_upstream_semvae
from sfd.training.semvae_fit import train_semvae
from sfd.training.texture_vae import holdout_split, train_texture_vae


def _parse_ints(ctx, param, value) -> tuple[int, ...]:
    if isinstance(value, tuple):
        return value
    try:
        return tuple(int(x) for x in str(value).split(","))
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers; got {value!r}") from None


# the range of each option made from a config field: by the field's type (counts and sizes
# >= 1, floats finite), else named here
_TYPES = {int: COUNT, float: FINITE}
_FIELD_TYPES = {
    "seed": SEED,
    "warmup_steps": NON_NEGATIVE,
    "num_workers": NON_NEGATIVE,
    "lr": POSITIVE,
}


def config_options(cls: type, skip: tuple[str, ...] = ()) -> Callable:
    """Click options ``--field-name`` for the fields of dataclass ``cls``."""

    def decorate(fn: Callable) -> Callable:
        for f in reversed(fields(cls)):
            if f.name in skip:
                continue
            name = "--" + f.name.replace("_", "-")
            if isinstance(f.default, tuple):
                default = ",".join(map(str, f.default))
                option = click.option(
                    name, default=default, callback=_parse_ints, show_default=True
                )
            else:
                kind = _FIELD_TYPES.get(f.name) or _TYPES.get(type(f.default))
                option = click.option(name, type=kind, default=f.default, show_default=True)
            fn = option(fn)
        return fn

    return decorate


def _pick(cls: type, kw: dict):
    """``cls`` from the options named after its fields (``--device`` resolved)."""
    given = {f.name: kw[f.name] for f in fields(cls) if f.name in kw}
    if "device" in {f.name for f in fields(cls)}:
        given["device"] = resolve_device(kw["device"])
    return cls(**given)


@click.command("train-semvae")
@click.option("--features", "feature_dir", required=True, type=click.Path(exists=True))
@click.option(
    "--val-features",
    "val_dir",
    default=None,
    type=click.Path(exists=True),
    help="Held-out feature set (default: the last shards of --features)",
)
@click.option("--out", "out_dir", required=True, type=click.Path())
@config_options(SemVAEConfig, skip=("in_dim", "grid"))
@config_options(SemVAETrainConfig, skip=("device",))
@device_option()
@no_verify_option
@dry_run_option("the model and training configs")
def train_semvae_command(feature_dir, val_dir, out_dir, dry_run, no_verify, **kw):
    """Train the Semantic VAE on encoder-feature shards (`sfd extract-features`)."""
    try:
        model, train = _pick(SemVAEConfig, kw), _pick(SemVAETrainConfig, kw)
    except ValueError as err:
        raise click.UsageError(str(err)) from None
    if dry_run:
        click.echo(json.dumps({"model": asdict(model), "train": asdict(train)}, indent=2))
        return
    metrics = train_semvae(feature_dir, out_dir, model, train, val_dir, verify=not no_verify)
    where = "training-set" if metrics.get("held_out") is False else "held-out"
    click.echo(f"{where} cos {metrics['cos']:.4f}, mse {metrics['mse']:.5f} -> {out_dir}")


@click.command("train-texture-vae")
@dataset_options
@click.option(
    "--eval-root", default=None, help="Image folder to measure PSNR on (overrides the hold-out)"
)
@click.option(
    "--holdout-fraction",
    type=FINITE,
    default=0.05,
    show_default=True,
    help="An image folder without --eval-root: this fraction of it is held out for the PSNR.",
)
@click.option("--out", "out_dir", required=True, type=click.Path())
@config_options(TextureVAETrainConfig, skip=("device",))
@device_option()
@dry_run_option("the training config")
def train_texture_vae_command(eval_root, holdout_fraction, out_dir, dry_run, **kw):
    """Train a small KL-VAE; report the reconstruction PSNR on the test split (Fashion-MNIST),
    --eval-root, or a held-out fraction of the folder."""
    config = _pick(TextureVAETrainConfig, kw)
    if dry_run:
        click.echo(json.dumps({"train": asdict(config)}, indent=2))
        return
    train = dataset_of(kw)
    if kw["dataset"] == "fashion-mnist" or eval_root is not None:
        test = dataset_of(kw, split="test", data_root=eval_root or kw["data_root"])
    else:
        try:
            train, test = holdout_split(train, holdout_fraction)
        except ValueError as err:
            raise click.BadParameter(str(err), param_hint="--holdout-fraction") from None
    metrics = train_texture_vae(train, out_dir, config, test)
    click.echo(f"{json.dumps(metrics)} -> {out_dir}")


@click.command("import-upstream-semvae")
@click.argument("state_dict", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="JSON of the release's create_semantic_autoencoder kwargs.",
)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False))
def import_upstream_semvae_command(state_dict, config_path, out_dir):
    """Turn the release's SemVAE state dict into an sfd SemVAE directory."""
    try:
        path = import_upstream_semvae(state_dict, config_path, out_dir)
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"imported {state_dict} -> {path}")


COMMANDS = (train_semvae_command, train_texture_vae_command, import_upstream_semvae_command)
