"""The ``sfd`` commands of the ecosystem (docs/ECOSYSTEM.md): ``export-diffusers`` and ``app``.

Thin click shells over :mod:`sfd.ecosystem`; the ``sfd`` group's error policy
(:mod:`sfd.cli.policy`) turns any failure into one line.
"""

from __future__ import annotations

from pathlib import Path

import click

from sfd.cli.options import NON_NEGATIVE, device_option, resolve_device
from sfd.errors import install_hint

_path = click.Path(exists=True, path_type=Path)


@click.command("export-diffusers")
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--decoder", type=_path, default=None, help="Texture autoencoder [the run's].")
@click.option(
    "--guide",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="AutoGuidance guide run or checkpoint (exported as guide_transformer/).",
)
@click.option(
    "--class-names",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Class names: a JSON list or a text file, one a line [the class ids].",
)
@click.option(
    "--metrics",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A JSON object of measured metrics for the model card (e.g. sfd eval --out).",
)
def export_diffusers_command(run, out, decoder, guide, class_names, metrics) -> None:
    """Write RUN as a diffusers directory OUT (model_index.json, transformer/, vae/,
    scheduler/, the module files, README.md); load it without sfd with
    DiffusionPipeline.from_pretrained(OUT, trust_remote_code=True), or with
    sfd.ecosystem.load_export(OUT)."""
    # lazy: diffusers takes ~10 s to import
    from sfd.ecosystem.export import ExportSources, export_diffusers

    sources = ExportSources(run, decoder, guide, class_names, metrics)
    click.echo(f"exported {run} -> {export_diffusers(sources, out)}")


@click.command("app")
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--decoder", type=_path, default=None, help="Texture autoencoder [the run's].")
@click.option(
    "--guide",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="AutoGuidance guide run or checkpoint.",
)
@click.option("--class-names", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=NON_NEGATIVE, default=7860, show_default=True)
@device_option()
def app_command(run, decoder, guide, class_names, host, port, device) -> None:
    """A local web app over RUN (an sfd run or a diffusers export): classes, seed, steps,
    guidance scale -> sample grid and stage strip. Needs the [app] extra (gradio)."""
    try:
        # lazy: an optional dependency (the [app] extra)
        import gradio  # noqa: F401
    except ImportError:
        raise click.ClickException(f"sfd app needs gradio: {install_hint('app')}") from None
    # lazy: gradio, an optional dependency (the [app] extra)
    from sfd.ecosystem.app import build_app, load_pipeline

    pipe = load_pipeline(run, decoder, guide, class_names, resolve_device(device))
    build_app(pipe).launch(server_name=host, server_port=port)


COMMANDS = (export_diffusers_command, app_command)
