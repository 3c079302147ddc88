"""``sfd sample``: a thin shell over :func:`sfd.sampling.generate_to_dir`."""

from __future__ import annotations

import click

from sfd import distributed
from sfd.cli.options import COUNT, SEED, device_option, dry_run_option, resolve_device, set_option
from sfd.recipes import SAMPLERS
from sfd.sampling import generate_to_dir, sampling_config
from sfd.training.checkpoint import read_checkpoint


@click.command("sample")
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--num", type=COUNT, default=16, show_default=True, help="Number of images.")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Output directory.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Image i uses seed + i.")
@click.option(
    "--batch-size",
    type=COUNT,
    default=16,
    show_default=True,
    help="Images solved together (the job's chunk).",
)
@click.option(
    "--guide",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="AutoGuidance guide model (checkpoint or run directory).",
)
@click.option(
    "--decoder",
    type=click.Path(exists=True),
    default=None,
    help="Texture autoencoder (default: the run's latent.texture_autoencoder).",
)
@click.option(
    "--labels",
    "labels_file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="A .npy or text file of --num class labels (default: balanced).",
)
@click.option("--latents-only", is_flag=True, help="Write composite latents, do not decode.")
@click.option(
    "--sampler",
    "sampler_name",
    type=click.Choice(tuple(SAMPLERS)),
    default=None,
    help="A published sampling setting (default: the checkpoint's; sfd presets lists them).",
)
@click.option(
    "--compile",
    "compile_",
    is_flag=True,
    help="torch.compile the model's blocks (on CPU needs a C++ compiler; docs/PERFORMANCE.md).",
)
@set_option
@device_option()
@dry_run_option("the checkpoint's config with the sampler and --set applied")
def sample_command(
    run,
    num,
    out,
    seed,
    batch_size,
    guide,
    decoder,
    labels_file,
    latents_only,
    sampler_name,
    compile_,
    overrides,
    device,
    dry_run,
) -> None:
    """Sample images (PNGs + ADM-style samples.npz) from RUN; resumable, torchrun-aware."""
    if dry_run:
        cfg = sampling_config(read_checkpoint(run).config, sampler_name, tuple(overrides))
        click.echo(cfg.to_json())
        return
    with distributed.process_group(resolve_device(device)) as dev:
        result = generate_to_dir(
            run,
            out,
            num,
            seed,
            batch_size,
            guide=guide,
            decoder=decoder,
            labels_file=labels_file,
            sampler_name=sampler_name,
            overrides=tuple(overrides),
            latents_only=latents_only,
            compile=compile_,
            device=dev,
        )
    if result.latents is not None:
        click.echo(f"wrote {num} latents to {result.latents}")
    elif result.npz is not None:
        click.echo(f"wrote {result.written} new images; all {num} in {out}/images and {result.npz}")


COMMANDS = (sample_command,)
