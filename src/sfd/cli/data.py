"""``sfd extract``, ``sfd extract-features``: thin shells over :mod:`sfd.extract`; ``sfd
verify``: over :mod:`sfd.training.integrity`."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import click

from sfd import distributed
from sfd.cli.options import (
    COUNT,
    DATASET_OPTION_KEYS,
    NON_NEGATIVE,
    dataset_of,
    dataset_options,
    device_option,
    dry_run_option,
    resolve_device,
)
from sfd.config import preset
from sfd.data.latent_storage import (
    DEFAULT_STORE,
    DEFAULT_STORE_WITHOUT_REPA,
    PAPER_SHAPES,
    Shapes,
    Storage,
    bytes_per_image,
    default_storage,
)
from sfd.errors import BadInputError
from sfd.extract import SETTINGS_FILE, extract, extract_features
from sfd.latents.encoders import ENCODERS, load_encoder
from sfd.latents.pca import CONFIG_FILE, fit_pca, load_pca
from sfd.latents.semvae import CONFIG_FILE as SEMVAE_CONFIG
from sfd.latents.semvae import load_semvae
from sfd.latents.texture import load_texture_autoencoder
from sfd.training.integrity import describe, verify_path

_SHARD_KEYS = ("out_dir", "shard_size", "batch_size", "num_workers", "device")


def _common_options(fn: Callable) -> Callable:
    """Dataset, encoder and sharding options shared by both extraction commands."""
    options = (
        click.option("--out", "out_dir", required=True, type=click.Path()),
        click.option("--shard-size", type=COUNT, default=1024, show_default=True),
        click.option("--batch-size", type=COUNT, default=64, show_default=True),
        click.option("--num-workers", type=NON_NEGATIVE, default=0, show_default=True),
        device_option(),
        click.option("--encoder", type=click.Choice(ENCODERS), default="efficientnet-lite0"),
        click.option("--encoder-path", default=None, help="Weights (DINOv2: a local directory)"),
        click.option(
            "--encoder-stride",
            type=NON_NEGATIVE,
            default=None,
            help="EfficientNet stage stride: 8, 16 or 32 [16]; efficientnet-lite0 only",
        ),
        click.option(
            "--encoder-antialias/--no-encoder-antialias",
            default=None,
            help="DINOv2 input resize: antialiased bicubic (sfd's earlier) or plain bicubic "
            "[the release's: --no-encoder-antialias]; dinov2 only",
        ),
        dry_run_option("the extraction settings"),
    )
    for option in reversed(options):
        fn = option(fn)
    return dataset_options(fn)


def _check_encoder_options(kw: dict) -> None:
    """Refuse options the chosen encoder would ignore (a ViT has a fixed patch size, no stride)."""
    if kw["encoder_stride"] is not None and kw["encoder"] != "efficientnet-lite0":
        raise click.UsageError(
            f"--encoder-stride applies to efficientnet-lite0 only; {kw['encoder']} is a ViT "
            f"with a fixed patch size and no stride to choose"
        )
    if kw["encoder_antialias"] is not None and kw["encoder"] != "dinov2":
        raise click.UsageError(
            f"--encoder-antialias applies to dinov2 only; {kw['encoder']} resizes with "
            f"antialiasing always"
        )


def _settings(kw: dict) -> dict:
    return {"dataset": {k: kw[k] for k in DATASET_OPTION_KEYS}, "encoder_path": kw["encoder_path"]}


def _open_common(kw: dict, grid: int | None) -> tuple:
    """(dataset, encoder on the device, settings for meta.json, sharding kwargs)."""
    name, path, stride = kw["encoder"], kw["encoder_path"], kw["encoder_stride"]
    encoder_kwargs = {"stride": stride or 16} if name == "efficientnet-lite0" else {}
    if kw["encoder_antialias"] is not None:
        encoder_kwargs["antialias"] = kw["encoder_antialias"]
    encoder = load_encoder(name, path, grid=grid, **encoder_kwargs).to(kw["device"])
    return dataset_of(kw), encoder, _settings(kw), {k: kw[k] for k in _SHARD_KEYS}


def _dry_run(kw: dict, **more) -> None:
    click.echo(json.dumps({**_settings(kw), **{k: kw[k] for k in _SHARD_KEYS}, **more}, indent=2))


@click.command("extract-features")
@_common_options
@click.option("--grid", type=COUNT, default=None, help="Latent grid (default: the encoder's)")
def extract_features_command(grid, dry_run, **kw):
    """Write encoder-feature shards (both views) to train the SemVAE on."""
    _check_encoder_options(kw)
    if dry_run:
        return _dry_run(kw, encoder=kw["encoder"], grid=grid)
    with distributed.process_group(resolve_device(kw["device"])) as kw["device"]:
        dataset, encoder, settings, shard_kw = _open_common(kw, grid)
        meta = extract_features(dataset, encoder, grid=grid, settings=settings, **shard_kw)
    if meta is not None:
        click.echo(f"{meta['count']} images -> {kw['out_dir']} ({len(meta['shards'])} shards)")


@click.command("extract")
@_common_options
@click.option("--texture-ae", required=True, help="diffusers AutoencoderKL dir or LDM .ckpt")
@click.option("--semvae", "semvae_path", required=True, help="Directory of a trained SemVAE")
@click.option("--repa/--no-repa", default=True, show_default=True, help="Store REPA targets")
@click.option(
    "--store",
    default=None,
    help="What is stored and how: POSTERIOR[-pcaK|-semvae][-flip], POSTERIOR f32, f16 or f16lv "
    f"(docs/FORMATS.md; --dry-run prints each option's bytes per image) [{DEFAULT_STORE}, its "
    "PCA fitted on --repa-pca or else the features the SemVAE was trained on; "
    f"{DEFAULT_STORE_WITHOUT_REPA} with --no-repa; an extraction into --out resumes with what "
    "it was begun with; f32: the first layout]",
)
@click.option(
    "--repa-pca",
    default=None,
    type=click.Path(exists=True, file_okay=False),
    help="For --store ...-pcaK: a saved PCA of K components, or an `sfd extract-features` "
    "directory of training images to fit one on",
)
def extract_command(texture_ae, semvae_path, repa, store, repa_pca, dry_run, **kw):
    """Write composite-latent shards (texture + semantic posteriors, REPA targets, labels)."""
    _check_encoder_options(kw)
    try:
        if store is None:
            storage = default_storage(repa, Path(kw["out_dir"]) / SETTINGS_FILE)
            if storage.repa == "pca" and repa_pca is None:
                repa_pca = semvae_features(semvae_path, storage)
        else:
            storage = Storage.parse(store)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--store") from None
    if (storage.repa == "pca") != (repa_pca is not None):
        raise click.UsageError("--repa-pca goes with --store ...-pcaK, and only with it")
    if dry_run:
        return _dry_run(
            kw,
            encoder=kw["encoder"],
            texture_ae_path=texture_ae,
            semvae_path=semvae_path,
            store=storage.record(),
            repa_pca=repa_pca,
            bytes_per_image=storage_sizes(storage),
        )
    with distributed.process_group(resolve_device(kw["device"])) as kw["device"]:
        tex = load_texture_autoencoder(texture_ae).to(kw["device"])
        grid = kw["image_size"] // tex.downsample
        dataset, encoder, settings, shard_kw = _open_common(kw, grid)
        settings.update(texture_ae_path=texture_ae, semvae_path=semvae_path)
        if repa_pca:
            settings["repa_pca"] = repa_pca
        semvae = load_semvae(semvae_path, kw["device"])
        pca = repa_pca_of(repa_pca, storage.pca_components) if repa_pca else None
        meta = extract(
            dataset,
            encoder,
            tex,
            semvae,
            repa=repa,
            settings=settings,
            storage=storage,
            repa_pca=pca,
            **shard_kw,
        )
    if meta is not None:
        click.echo(
            f"{meta['count']} images -> {kw['out_dir']}: {meta['tex_channels']} + "
            f"{meta['sem_channels']} channels at {grid}x{grid}"
        )


def embedded_shapes() -> Shapes:
    """The embedded default's latent set (sfd demo, the `demo` preset): 4 + 4 channels on 8x8
    and EfficientNet-Lite0's stride-8 map (40-d) on the same grid as REPA targets."""
    cfg = preset("demo")
    lat = cfg.latent
    return Shapes(lat.tex_channels, lat.sem_channels, lat.size, cfg.model.repa_dim, lat.size)


# the options --dry-run sizes beside the chosen one
SIZED_SPECS = (
    "f32",
    "f16",
    "f16lv",
    "f32-flip",
    "f16-flip",
    "f16-pca64",
    "f16-pca32",
    "f16-pca16",
    "f16-pca64-flip",
    "f16-pca32-flip",
    "f16-pca16-flip",
    "f16-semvae",
)


def storage_sizes(chosen: Storage) -> dict:
    """Bytes per image of ``chosen`` and of the common options, at the paper's shapes and at
    the embedded default's (a K above the embedded default's 40 dims is left out there)."""
    specs = dict.fromkeys([chosen.spec, *SIZED_SPECS])
    out = {}
    for name, shapes in (("paper", PAPER_SHAPES), ("embedded_default", embedded_shapes())):
        sizes = {}
        for spec in specs:
            st = Storage.parse(spec)
            if st.pca_components <= shapes.repa_dim:
                sizes[spec] = bytes_per_image(st, shapes)["total"]
        out[name] = {"shapes": dataclasses.asdict(shapes), "bytes": sizes}
    return out


def semvae_features(semvae_path: str, storage: Storage) -> str:
    """The feature set the SemVAE at ``semvae_path`` was trained on (its ``semvae.json``), to fit
    the default storage's PCA on; a usage error naming what is missing otherwise."""
    recorded = None
    with contextlib.suppress(OSError, ValueError, AttributeError):  # then: the usage error
        recorded = json.loads((Path(semvae_path) / SEMVAE_CONFIG).read_text()).get("features")
    if isinstance(recorded, str) and Path(recorded).is_dir():
        click.echo(
            f"--store {storage.spec}: its PCA from {recorded} (the SemVAE's features)", err=True
        )
        return recorded
    where = f"its recorded features {recorded!r} are not here" if recorded else "none recorded"
    raise click.UsageError(
        f"--store defaults to {storage.spec}, whose PCA is fitted on training features: pass "
        f"--repa-pca DIR (an `sfd extract-features` directory or a saved PCA of "
        f"{storage.pca_components}; {semvae_path}: {where}), or choose --store f16 or f32"
    )


def repa_pca_of(path: str, k: int):
    """A saved PCA of ``k`` components at ``path``, or one fitted on the feature set there."""
    if (Path(path) / CONFIG_FILE).exists():
        pca = load_pca(path)
        if pca.channels != k:
            raise click.BadParameter(
                f"{path} holds a PCA of {pca.channels} components; --store asks for {k}",
                param_hint="--repa-pca",
            )
        return pca
    return fit_pca(path, k)


@click.command("verify")
@click.argument("path", type=click.Path())
def verify_command(path):
    """Check a latent set, a feature set, a checkpoint or a run against its recorded sha256
    digests; prints what is intact and what is damaged (exit 3 if anything is)."""
    results = verify_path(path)
    for what, report in results:
        for line in describe(what, report):
            click.echo(line)
    damaged = [what for what, report in results if report.problems]
    if damaged:
        raise BadInputError(f"{len(damaged)} of {len(results)} damaged: {', '.join(damaged)}")


COMMANDS = (extract_features_command, extract_command, verify_command)
