"""The ``sfd`` command line: thin click commands over library functions."""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
from pathlib import Path

import click
import torch

from sfd.cli_policy import PolicyGroup, apply_value_policy, to_click_error, wants_traceback
from sfd.config import PRESETS, Config, apply_overrides, load_config_file, preset
from sfd.data.images import on_error_option
from sfd.errors import ConfigError, MismatchError, OverrideError, SfdError
from sfd.pipeline import BUDGETS
from sfd.recipes import (
    RECIPES,
    SAMPLERS,
    apply_recipe,
    apply_sampler,
    describe_sampler,
    is_release_sampler,
)

log = logging.getLogger("sfd.cli")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )


def resolve_config(
    preset_name: str | None,
    config_file: str | None,
    overrides: tuple[str, ...],
    recipe: str | None = None,
) -> Config:
    """Preset or a config file (typed like ``--set``), then the recipe, then ``--set``
    overrides. A bad config file is a :class:`ConfigError` naming the file and the key; a bad
    ``--set`` a usage error."""
    cfg = load_config_file(config_file) if config_file else preset(preset_name or "tiny")
    try:
        if recipe:
            cfg = apply_recipe(cfg, recipe)
        return apply_overrides(cfg, list(overrides))
    except (ConfigError, ValueError) as err:
        raise click.UsageError(str(err)) from None


def friendly_errors(fn):
    """Report any failure as one clear line with the error policy's exit code (sfd.errors);
    the ``sfd`` group does the same for every command, this keeps a command that is invoked on
    its own alike. ``--debug`` / ``SFD_DEBUG=1`` keep the traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (click.exceptions.Exit, click.Abort, KeyboardInterrupt, SystemExit):
            raise
        except click.ClickException:
            raise
        except Exception as err:
            if wants_traceback():
                raise
            raise to_click_error(err) from None

    return wrapper


def _device(name: str | None) -> str:
    if name:
        if name.startswith("cuda") and not torch.cuda.is_available():
            raise click.BadParameter(
                f"{name!r} requested but CUDA is not available", param_hint="--device"
            )
        return name
    return "cuda" if torch.cuda.is_available() else "cpu"


@click.group(cls=PolicyGroup)
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.option(
    "--debug",
    is_flag=True,
    help="Show the traceback of a failure (also SFD_DEBUG=1) instead of one line.",
)
@click.version_option(package_name="sfd")
def main(verbose: bool, debug: bool) -> None:
    """Semantic-First Diffusion: train, sample, import and evaluate.

    A failure prints one line, `Error: ...`, and exits with a code that says what failed:
    1 refused, 2 command line, 3 bad input file, 4 bad config, 5 inputs that do not fit
    together, 6 unsafe file refused, 7 write failed, 8 run directory busy, 9 diverged,
    70 internal error (a bug: rerun with --debug and report it)."""
    _setup_logging(verbose)


_set_option = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="SECTION.KEY=VALUE",
    help="Typed config override, e.g. --set train.lr=2e-4 (repeatable).",
)


@main.command()
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
@_set_option
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
@click.option("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available).")
@click.option("--max-steps", type=int, default=None, help="Stop after this many more steps.")
@click.option(
    "--dry-run", is_flag=True, help="Print the resolved config (checked against --data) and exit."
)
@friendly_errors
def train(
    preset_name, config_file, recipe, overrides, data, out, device, max_steps, dry_run
) -> None:
    """Train SFD on pre-computed latents (a rerun resumes RUN from its stored config)."""
    from sfd.training.loop import validate_run
    from sfd.training.run_config import resolve_train_config

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
    from sfd import distributed
    from sfd.training.loop import train as run_training

    dev = distributed.init_from_env(_device(device))
    try:
        result = run_training(cfg, data, out, device=dev, max_steps=max_steps)
    finally:
        distributed.shutdown()
    if distributed.is_main():
        click.echo(
            f"trained to step {result.step} in {result.run_dir} "
            f"({result.skipped_steps} non-finite steps skipped)"
        )


@main.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--num", type=int, default=16, show_default=True, help="Number of images.")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Output directory.")
@click.option("--seed", type=int, default=0, show_default=True, help="Image i uses seed + i.")
@click.option(
    "--batch-size",
    type=int,
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
@_set_option
@click.option("--device", default=None)
@friendly_errors
def sample(
    run, num, out, seed, batch_size, guide, decoder, labels_file, latents_only, sampler_name,
    overrides, device,
) -> None:  # fmt: skip
    """Sample images (PNGs + ADM-style samples.npz) from RUN; resumable, torchrun-aware."""
    from sfd import distributed
    from sfd.api import load_checkpoint
    from sfd.generate import GenerationJob, LatentSampler

    dev = distributed.init_from_env(_device(device))
    model, ckpt = load_checkpoint(run, dev)
    cfg = ckpt.config if sampler_name is None else apply_sampler(ckpt.config, sampler_name)
    cfg = _with_sample_overrides(cfg, overrides)
    if distributed.is_main():
        _log_sampler(cfg, sampler_name, overrides)
    guide_model = load_checkpoint(guide, dev)[0] if guide else None
    sampler = LatentSampler(model, cfg, ckpt.stats, guide_model, dev)
    out = Path(out)
    labels = _read_labels(labels_file, num, cfg.model.num_classes) if labels_file else None
    if latents_only:
        _write_latents(sampler, out, num, seed, batch_size, labels)
        return
    if decoder:
        decoder_path = decoder
    elif cfg.latent.texture_autoencoder:
        decoder_path = _run_relative(cfg.latent.texture_autoencoder, ckpt.path.parent.parent)
    else:
        raise click.UsageError("no decoder: pass --decoder PATH (or --latents-only)")
    from sfd.latents.texture import load_texture_autoencoder

    _check_generation_settings(
        out,
        {
            "run": str(Path(run).resolve()),
            "num": num,
            "seed": seed,
            "batch_size": batch_size,
            "sample": cfg.to_dict()["sample"],
            "guide": str(guide),
            "labels": str(labels_file),
        },
    )
    decoder_model = load_texture_autoencoder(decoder_path).to(dev).eval()
    job = GenerationJob(sampler, decoder_model, out, num, batch_size, seed, labels)
    written = job.run(distributed.rank(), distributed.world_size())
    distributed.barrier()
    if distributed.is_main():
        npz = out / "samples.npz"
        if not npz.exists():
            npz = job.write_npz()
        click.echo(f"wrote {written} new images; all {num} in {out}/images and {npz}")


def _log_sampler(cfg: Config, sampler_name: str | None, overrides: tuple[str, ...]) -> None:
    """One line: the sampler in use, where its settings come from, and whether it is the
    release's (imported release YAMLs store it) or sfd's exact boundary rule."""
    source = f"--sampler {sampler_name}" if sampler_name else "the checkpoint's settings"
    if overrides:
        source += " with --set"
    if is_release_sampler(cfg.sample):
        what = "the release's sampler; --set sample.boundary=exact for sfd's rule"
    else:
        what = "not the release's published sampler (sfd presets: --sampler release)"
    log.info("sampler: %s (%s: %s)", describe_sampler(cfg.sample), source, what)


def _check_generation_settings(out: Path, settings: dict) -> None:
    """Record a job's settings; a rerun into the same directory must use the same ones."""
    from sfd import distributed
    from sfd.data.shards import atomic_write_json

    path = out / "generation.json"
    if path.exists():
        stored = json.loads(path.read_text())
        if stored != json.loads(json.dumps(settings)):
            changed = sorted(
                k for k in settings if stored.get(k) != json.loads(json.dumps(settings[k]))
            )
            raise MismatchError(
                f"{out} holds a sampling job with other settings "
                f"({', '.join(changed)}); use a new --out"
            )
    elif distributed.is_main():
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, settings)
    distributed.barrier()


def _run_relative(path: str, run_dir: Path) -> Path:
    """A path stored in a run's config: as given if it exists, else relative to the run directory.

    ``sfd demo`` stores its decoder relative to the run (``../texture_vae``), so the run works from
    any current directory and after the whole demo directory is moved.
    """
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    beside = run_dir / p
    if beside.exists():
        return beside
    raise click.UsageError(
        f"the run's latent.texture_autoencoder {path!r} exists neither from the current directory "
        f"nor from the run directory {run_dir}; pass --decoder PATH"
    )


def _read_labels(path: str, num: int, num_classes: int) -> torch.Tensor:
    import numpy as np

    arr = np.load(path) if path.endswith(".npy") else np.loadtxt(path, dtype=np.int64)
    labels = torch.as_tensor(np.asarray(arr, dtype=np.int64)).reshape(-1)
    if labels.numel() != num or labels.min() < 0 or labels.max() >= num_classes:
        raise click.BadParameter(
            f"{path} must hold {num} labels in [0, {num_classes}); got "
            f"{labels.numel()} in [{labels.min()}, {labels.max()}]",
            param_hint="--labels",
        )
    return labels


def _write_latents(
    sampler, out: Path, num: int, seed: int, batch_size: int, labels: torch.Tensor | None
) -> None:
    """De-normalised composite latents of images [0, num) with ``labels`` (default balanced)."""
    from sfd.data.shards import atomic_save_safetensors
    from sfd.generate import balanced_labels

    target = out / "latents.safetensors"
    if target.exists():
        raise click.ClickException(
            f"{target} exists; choose another --out (nothing is overwritten)"
        )
    if labels is None:
        labels = balanced_labels(range(num), sampler.config.model.num_classes)
    parts = []
    for start in range(0, num, batch_size):
        idx = list(range(start, min(num, start + batch_size)))
        sol = sampler.sample(idx, labels[idx], seed=seed)
        parts.append(sampler.stats.denormalize(sol.final).cpu())
    out.mkdir(parents=True, exist_ok=True)
    atomic_save_safetensors(
        target,
        {"latents": torch.cat(parts), "labels": labels},
        {"config": sampler.config.to_json(), "seed": str(seed)},
    )
    click.echo(f"wrote {num} latents to {target}")


def _with_sample_overrides(cfg: Config, overrides: tuple[str, ...]) -> Config:
    for item in overrides:
        if not item.startswith("sample."):
            raise click.UsageError(f"sampling accepts only sample.* overrides; got {item!r}")
    try:
        return apply_overrides(cfg, list(overrides))
    except ValueError as err:
        raise click.UsageError(str(err)) from None


@main.command("import-upstream")
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
    type=float,
    default=None,
    help="The release's CFG_SCALE: replaces the YAML's cfg_scale (the AutoGuidance scale "
    "when the YAML sets autoguidance: true).",
)
@friendly_errors
def import_upstream_cmd(
    ckpt, upstream_config, out, latent_stats, weights, inference_config, cfg_scale
) -> None:
    """Turn an official SFD release checkpoint into an sfd checkpoint directory."""
    from sfd.upstream import import_upstream

    path = import_upstream(
        ckpt, upstream_config, out, latent_stats or None, weights, inference_config, cfg_scale
    )
    click.echo(f"imported {ckpt} -> {path}")


@main.command("presets")
def presets_cmd() -> None:
    """List presets with their sizes (built on the meta device), recipes and samplers."""
    from sfd.model import LightningDiT, count_parameters

    for name in PRESETS:
        cfg = preset(name)
        with torch.device("meta"):
            n = count_parameters(LightningDiT(cfg.model, cfg.latent))
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


@main.command("bench")
@click.option(
    "--preset", "preset_name", type=click.Choice(PRESETS), default="tiny", show_default=True
)
@_set_option
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option("--device", default=None)
@click.option("--iters", type=int, default=5, show_default=True, help="Timed iterations.")
@click.option("--warmup", type=int, default=2, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option(
    "--compare",
    "ref",
    default=None,
    help="Time this tree against REF (a git revision or a source tree), interleaved, and "
    "print the ratio (> 1: this tree faster).",
)
@click.option(
    "--ref-set",
    "ref_overrides",
    multiple=True,
    help="With --compare: the reference's overrides instead of --set's (repeatable).",
)
@click.option(
    "--mode",
    type=click.Choice(["train", "forward"]),
    default="train",
    show_default=True,
    help="With --compare: time the training step or an inference forward.",
)
@click.option("--threads", type=int, default=0, help="Torch threads (0: torch's default).")
@friendly_errors
def bench_cmd(
    preset_name,
    overrides,
    batch_size,
    device,
    iters,
    warmup,
    as_json,
    ref,
    ref_overrides,
    mode,
    threads,
) -> None:
    """Time the training step and the sampler; print img/s, FLOPs and MFU.

    With --compare REF: the training step (or forward) of this tree and of REF, each in its own
    process, alternated call by call; the medians and their ratio.
    """
    if ref is not None:
        from sfd.bench_compare import compare

        resolve_config(preset_name, None, overrides)  # unknown keys fail here, not in a worker
        result = compare(
            ref,
            preset_name,
            batch_size,
            overrides=tuple(overrides),
            ref_overrides=tuple(ref_overrides) if ref_overrides else None,
            mode=mode,
            device=str(_device(device)),
            threads=threads,
            warmup=warmup,
            iters=iters,
        )
        click.echo(json.dumps(dataclasses.asdict(result), indent=2) if as_json else result.table())
        return
    from sfd.bench import run_bench

    if threads:
        torch.set_num_threads(threads)
    cfg = resolve_config(preset_name, None, overrides)
    result = run_bench(cfg, batch_size, _device(device), warmup=warmup, iters=iters)
    click.echo(json.dumps(dataclasses.asdict(result), indent=2) if as_json else result.table())


@main.command("demo")
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
@_set_option
@click.option("--device", default=None)
@friendly_errors
def demo_cmd(out, quick, data_root, overrides, device) -> None:
    """SFD end to end on Fashion-MNIST: VAEs, SemVAE, latents, training, samples, metrics."""
    from sfd.demo import DemoSettings, run_demo

    settings = DemoSettings.quick() if quick else DemoSettings()
    settings = dataclasses.replace(settings, overrides=tuple(overrides))
    metrics = run_demo(out, settings, data_root, _device(device))
    click.echo(json.dumps(metrics, indent=2))
    click.echo(f"artefacts in {out}: samples.png stages.png curves.png metrics.json")


@main.command("pipeline")
@click.option(
    "--data-root",
    required=True,
    help="An image folder root/<class>/<image> (your images), or fashion-mnist.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    required=True,
    help="Run directory; a rerun resumes where it stopped (finished stages are kept).",
)
@click.option(
    "--budget",
    type=click.Choice(tuple(BUDGETS)),
    default="cpu-10min",
    show_default=True,
    help="Named stage sizes (see README: your own images).",
)
@click.option(
    "--stage",
    "stage_overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override one stage size of the budget, e.g. --stage sfd_steps=1000 (repeatable).",
)
@click.option("--image-size", type=int, default=None, help="Pixels [64; fashion-mnist 32].")
@click.option("--channels", type=click.Choice(["1", "3"]), default=None, help="[3; fmnist 1].")
@on_error_option()
@_set_option
@click.option("--device", default=None)
@friendly_errors
def pipeline_cmd(
    data_root, out, budget, stage_overrides, image_size, channels, on_error, overrides, device
) -> None:  # fmt: skip
    """SFD end to end on your images: texture VAE, features, SemVAE, latents, SFD, samples."""
    from sfd.pipeline import run_pipeline, with_stage_overrides

    fmnist = data_root == "fashion-mnist"
    if not fmnist and not Path(data_root).is_dir():
        raise click.BadParameter(
            f"{data_root} is not a directory (expected root/<class>/<image>, or fashion-mnist)",
            param_hint="--data-root",
        )
    shape = {"image_size": image_size or (32 if fmnist else 64)}
    shape["channels"] = int(channels or (1 if fmnist else 3))
    settings = dataclasses.replace(BUDGETS[budget], **shape)
    settings = with_stage_overrides(settings, list(stage_overrides))
    summary = run_pipeline(data_root, out, settings, tuple(overrides), on_error, _device(device))
    click.echo(json.dumps(summary, indent=2))
    click.echo(f"samples in {out}/samples.png; more: sfd sample {out}/run --num 16 --out DIR")


@main.command("ablate")
@click.option("--out", type=click.Path(file_okay=False), default="runs/ablate", show_default=True)
@click.option(
    "--rows",
    default=None,
    help="Comma-separated rows (default: baseline,repa,semvae-sync,sfd,redi,redi-sf and the "
    "Δt sweep dt-0.1,dt-0.2,dt-0.5,dt-0.7,dt-1); dt-X is the SemVAE latent at Δt = X.",
)
@click.option("--seeds", type=int, default=None, help="Training seeds of the main rows [3].")
@click.option("--sweep-seeds", type=int, default=None, help="Seeds of the other rows [1].")
@click.option("--steps", type=int, default=None, help="Training steps of every run [1000].")
@click.option("--checkpoints", type=int, default=None, help="Evaluated checkpoints per run [5].")
@click.option("--num-samples", type=int, default=None, help="Samples per evaluation [1000].")
@click.option("--cfg", "cfg_scale", type=float, default=None, help="Guidance of the curves [1].")
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
    type=int,
    default=None,
    help="Semantic channels of the embedded default's SemVAE [4]; trains its own SemVAE and "
    "latents in OUT/base (use a new --out).",
)
@_set_option
@click.option("--device", default=None)
@friendly_errors
def ablate_cmd(
    out, rows, seeds, sweep_seeds, steps, checkpoints, num_samples, cfg_scale, cfg_sweep, quick,
    shard, data, features, decoder, ref, sem_channels, overrides, device,
) -> None:  # fmt: skip
    """The paper's ablation grid (rows x seeds x checkpoints), cached and resumable."""
    from sfd.ablate import AblationSettings, parse_shard, run_ablation

    given = {
        "rows": None if rows is None else tuple(r.strip() for r in rows.split(",") if r.strip()),
        "main_seeds": seeds,
        "sweep_seeds": sweep_seeds,
        "steps": steps,
        "checkpoints": checkpoints,
        "num_samples": num_samples,
        "cfg_scale": cfg_scale,
        "cfg_sweep": None
        if cfg_sweep is None
        else tuple(float(w) for w in cfg_sweep.split(",") if w.strip()),
        "sem_channels": sem_channels,
    }
    given = {k: v for k, v in given.items() if v is not None}
    make = AblationSettings.quick_settings if quick else AblationSettings
    # --set comes after the grid's own model settings, so it can change them or add to them
    settings = make(**given)
    settings = make(**given, overrides=settings.overrides + tuple(overrides))
    summary = run_ablation(
        Path(out),
        settings,
        shard=parse_shard(shard),
        device=_device(device),
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


def _register_subpackage_commands() -> None:
    """Commands defined beside their library code (evaluation, data pipeline, demo)."""
    from sfd.eval.cli import eval_command, ref_stats_command, train_classifier_command
    from sfd.extract import extract_command, extract_features_command
    from sfd.latents.train_autoencoders import train_semvae_command, train_texture_vae_command
    from sfd.latents.upstream_semvae import import_upstream_semvae_command

    main.add_command(eval_command, "eval")
    main.add_command(ref_stats_command, "ref-stats")
    main.add_command(train_classifier_command, "train-classifier")
    for command in (
        extract_command,
        extract_features_command,
        train_semvae_command,
        train_texture_vae_command,
    ):
        command.callback = friendly_errors(command.callback)
    main.add_command(extract_command, "extract")
    main.add_command(extract_features_command, "extract-features")
    main.add_command(train_semvae_command, "train-semvae")
    main.add_command(train_texture_vae_command, "train-texture-vae")
    main.add_command(import_upstream_semvae_command, "import-upstream-semvae")
    from sfd.cli_ecosystem import register  # export-diffusers, app

    register(main)


_register_subpackage_commands()
apply_value_policy(main)


if __name__ == "__main__":  # pragma: no cover
    main()
