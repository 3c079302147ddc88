"""``sfd demo``, ``sfd pipeline``, ``sfd ablate``: experiments built from the library (thin
shells over :mod:`sfd.experiments`: demo, custom, ablate)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import click

from sfd.cli.options import (
    COUNT,
    FINITE,
    NON_NEGATIVE,
    FiniteRange,
    device_option,
    dry_run_option,
    on_error_option,
    resolve_device,
    set_option,
)
from sfd.experiments.ablate import AblationSettings, parse_shard, run_ablation
from sfd.experiments.custom import (
    BUDGET_ALIASES,
    BUDGETS,
    NAMED_DATASETS,
    run_pipeline,
    with_stage_overrides,
)
from sfd.experiments.custom import budget as budget_sizes
from sfd.experiments.demo import EMBEDDED_DATASETS, DemoSettings, for_dataset, run_demo
from sfd.experiments.run_metrics import describe


def dataset_option(fn):
    """``--dataset`` and ``--background-strength``: the embedded dataset (sfd.experiments.demo)."""
    fn = click.option(
        "--background-strength",
        "background",
        type=FiniteRange(0.0, 1.0),
        default=0.6,
        show_default=True,
        help="composites: 1 keeps the photographs, 0 greys them out.",
    )(fn)
    return click.option(
        "--dataset",
        type=click.Choice(EMBEDDED_DATASETS),
        default="fashion-mnist",
        show_default=True,
        help="The embedded dataset: Fashion-MNIST, or its garments on photographs (composites: "
        "the texture latent carries little of the class).",
    )(fn)


_redo_option = click.option(
    "--redo",
    is_flag=True,
    help="Recompute a stage that --out holds with other settings, and every stage after it "
    "(their files in --out are replaced; the log names them). Without it such a rerun is "
    "refused, naming the settings that differ.",
)


@click.command("demo")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default="runs/demo",
    show_default=True,
    help="Run directory; a rerun resumes where it stopped.",
)
@click.option("--quick", is_flag=True, help="A small version (minutes) that checks every stage.")
@click.option(
    "--data-root",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="Fashion-MNIST IDX directory (default: the Debian package's).",
)
@dataset_option
@set_option
@device_option()
@_redo_option
@dry_run_option("the demo's stage sizes")
def demo_command(
    out, quick, data_root, dataset, background, overrides, device, redo, dry_run
) -> None:
    """SFD end to end on an embedded dataset (Fashion-MNIST by default): VAEs, SemVAE, latents,
    training, samples, metrics."""
    settings = DemoSettings.quick() if quick else DemoSettings()
    settings = dataclasses.replace(
        settings, overrides=tuple(overrides), dataset=dataset, background_strength=background
    )
    settings = settings if quick else for_dataset(settings)
    if dry_run:
        return _print_settings(settings)
    metrics = run_demo(out, settings, data_root, resolve_device(device), redo)
    click.echo(json.dumps(metrics, indent=2))
    click.echo(f"artefacts in {out}: samples.png stages.png curves.png metrics.json")


@click.command("pipeline")
@click.option(
    "--data-root",
    required=True,
    help="An image folder root/<class>/<image> (your images), or a named dataset: "
    "fashion-mnist, composites (its garments on photographs).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    required=True,
    help="Run directory; a rerun resumes where it stopped (finished stages are kept).",
)
@click.option(
    "--budget",
    type=click.Choice((*BUDGETS, *BUDGET_ALIASES)),
    default="small",
    show_default=True,
    help="Named stage sizes: small (~300 steps per stage, the demo model; a CPU) or large "
    "(5k-20k steps, the S model; a GPU); cpu-10min and gpu-1h are their old names. An "
    "estimate of each stage's time on this machine is printed before it starts.",
)
@click.option(
    "--stage",
    "stage_overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override one stage size of the budget, e.g. --stage sfd_steps=1000 (repeatable).",
)
@click.option("--image-size", type=COUNT, default=None, help="Pixels [64; named datasets 32].")
@click.option("--channels", type=click.Choice(["1", "3"]), default=None, help="[3; fmnist 1].")
@on_error_option()
@set_option
@device_option()
@_redo_option
@dry_run_option("the stage sizes")
def pipeline_command(
    data_root,
    out,
    budget,
    stage_overrides,
    image_size,
    channels,
    on_error,
    overrides,
    device,
    redo,
    dry_run,
) -> None:
    """SFD end to end on your images: texture VAE, features, SemVAE, latents, SFD, samples."""
    fmnist, named = data_root == "fashion-mnist", data_root in NAMED_DATASETS
    if not named and not Path(data_root).is_dir():
        raise click.BadParameter(
            f"{data_root} is not a directory (expected root/<class>/<image>, or one of "
            f"{', '.join(NAMED_DATASETS)})",
            param_hint="--data-root",
        )
    shape = {"image_size": image_size or (32 if named else 64)}
    shape["channels"] = int(channels or (1 if fmnist else 3))
    settings = dataclasses.replace(budget_sizes(budget), **shape)
    settings = with_stage_overrides(settings, list(stage_overrides))
    if dry_run:
        return _print_settings(settings)
    device = resolve_device(device)
    summary = run_pipeline(data_root, out, settings, tuple(overrides), on_error, device, redo)
    click.echo(json.dumps(summary, indent=2))
    click.echo("\n".join(describe(summary)))
    click.echo(
        f"artefacts in {out}: samples.png stages.png curves.png metrics.json; "
        f"more samples: sfd sample {out}/run --num 16 --out DIR"
    )


@click.command("ablate")
@click.option("--out", type=click.Path(file_okay=False), default="runs/ablate", show_default=True)
@click.option(
    "--rows",
    default=None,
    help="Comma-separated rows (default: baseline,repa,semvae-sync,sfd,redi,redi-sf and the "
    "Δt sweep dt-0.1,dt-0.2,dt-0.5,dt-0.7,dt-1); dt-X is the SemVAE latent at Δt = X; also "
    "random-sync,random-sf (control), learned, redi-learned, learned-lamX / learned-pN / "
    "learned-lamX-pN (a learned schedule, its probe's λ = X and N steps), warp / warp-lamX (that "
    "path made synchronous: its time warp without its lead) and store-SPEC (docs/ABLATION.md).",
)
@click.option("--seeds", type=COUNT, default=None, help="Training seeds of the main rows [3].")
@click.option("--sweep-seeds", type=COUNT, default=None, help="Seeds of the other rows [1].")
@click.option("--steps", type=COUNT, default=None, help="Training steps of every run [1000].")
@click.option("--checkpoints", type=COUNT, default=None, help="Evaluated checkpoints per run [5].")
@click.option("--num-samples", type=COUNT, default=None, help="Samples per evaluation [1000].")
@click.option("--cfg", "cfg_scale", type=FINITE, default=None, help="Guidance of the curves [1].")
@click.option(
    "--cfg-sweep", default=None, help="Comma-separated guidance scales at the final checkpoint."
)
@click.option("--quick", is_flag=True, help="Toy sizes (2 rows x 2 seeds x 2 checkpoints).")
@click.option("--shard", default="0/1", show_default=True, help="i/n: this process's part.")
@click.option(
    "--data", type=click.Path(exists=True, file_okay=False), help="A latent set (sfd extract)."
)
@click.option(
    "--features",
    type=click.Path(exists=True, file_okay=False),
    help="Encoder features of training images (sfd extract-features): the PCA rows' input.",
)
@click.option(
    "--decoder", type=click.Path(exists=True, file_okay=False), help="Texture autoencoder."
)
@click.option(
    "--ref",
    type=click.Path(exists=True, dir_okay=False),
    help="Real images (.npz, arr_0 uint8 NHWC, >= 2 x --num-samples) for --data.",
)
@click.option(
    "--sem-channels",
    type=NON_NEGATIVE,
    default=None,
    help="Semantic channels of the embedded default's SemVAE [4]; trains its own SemVAE and "
    "latents in OUT/base (use a new --out).",
)
@click.option(
    "--texture-steps",
    type=click.IntRange(min=1),
    default=None,
    help="Texture-VAE steps of the embedded default's base [250]; trains its own data stages in "
    "OUT/base (use a new --out).",
)
@click.option(
    "--nfe-samplers",
    default=None,
    help="Comma-separated samplers of the sampling-steps axis at the final checkpoint "
    "(euler-N, heun-N, dopri5) [euler-4,euler-8,euler-16,euler-32,heun-10,dopri5].",
)
@dataset_option
@set_option
@device_option()
@dry_run_option("the grid's settings")
def ablate_command(
    out,
    rows,
    seeds,
    sweep_seeds,
    steps,
    checkpoints,
    num_samples,
    cfg_scale,
    cfg_sweep,
    quick,
    shard,
    data,
    features,
    decoder,
    ref,
    sem_channels,
    texture_steps,
    nfe_samplers,
    dataset,
    background,
    overrides,
    device,
    dry_run,
) -> None:
    """The paper's ablation grid (rows x seeds x checkpoints), cached and resumable."""
    given = {
        "rows": _comma(rows),
        "main_seeds": seeds,
        "sweep_seeds": sweep_seeds,
        "steps": steps,
        "checkpoints": checkpoints,
        "num_samples": num_samples,
        "cfg_scale": cfg_scale,
        "cfg_sweep": _comma(cfg_sweep, float),
        "sem_channels": sem_channels,
        "texture_steps": texture_steps,
        "nfe_samplers": _comma(nfe_samplers),
        "dataset": dataset,
        "background_strength": background,
    }
    settings = _ablation_settings(given, quick, overrides)
    if dry_run:
        return _print_settings(settings)
    summary = run_ablation(
        Path(out),
        settings,
        shard=parse_shard(shard),
        device=resolve_device(device),
        latents=None if data is None else Path(data),
        features=None if features is None else Path(features),
        decoder=None if decoder is None else Path(decoder),
        reference=None if ref is None else Path(ref),
    )
    click.echo((Path(out) / "table.md").read_text())
    work = summary["work"]
    click.echo(
        f"this run trained {len(work['trained'])} and evaluated {len(work['evaluated'])}; "
        f"artefacts in {out}: results.json table.md ablation.png delta_t.png"
    )


def _comma(text: str | None, kind: Callable = str) -> tuple | None:
    """The values of a comma-separated option (``None``: not given)."""
    if text is None:
        return None
    return tuple(kind(x.strip()) for x in text.split(",") if x.strip())


def _ablation_settings(given: dict, quick: bool, overrides: tuple[str, ...]):
    """The grid's settings from the options given (``None``: the grid's default)."""
    given = {k: v for k, v in given.items() if v is not None}
    make = AblationSettings.quick_settings if quick else AblationSettings
    # --set comes after the grid's own model settings, so it can change them or add to them
    settings = make(**given)
    return make(**given, overrides=settings.overrides + tuple(overrides))


def _print_settings(settings) -> None:
    click.echo(json.dumps(dataclasses.asdict(settings), indent=2, default=str))


COMMANDS = (demo_command, pipeline_command, ablate_command)
