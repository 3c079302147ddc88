"""Options shared by the ``sfd`` commands, each written once.

``--device`` means the same on every command: a torch device name (``cpu``, ``cuda``,
``cuda:1``); unset or ``auto`` is CUDA when available, else the CPU. ``sfd train-classifier``
alone defaults to ``cpu``, stated in its help: the packaged classifier is reproduced on a CPU.
``--set`` is a typed config override; ``--dry-run`` prints what a long command would do and
exits.

Every numeric option declares its range on itself, so an absurd value is refused before any work
starts, in one line naming the option and what was expected: :data:`COUNT` for what counts or
sizes something (>= 1: ``--num 0`` makes no sense), :data:`NON_NEGATIVE` for other integers,
:data:`SEED` for seeds (any integer), :data:`FINITE` and :data:`POSITIVE` for floats (``nan`` and
``inf`` refused), :class:`FiniteRange` for a bounded float, ``click.IntRange`` where a bound is
not one of these.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import click
import torch

from sfd.config import Config, apply_overrides, load_config_file, preset
from sfd.data.datasets import DATASETS, open_dataset
from sfd.data.images import ON_ERROR, ON_ERROR_HELP
from sfd.errors import ConfigError
from sfd.recipes import apply_recipe


class AtLeast(click.types.IntParamType):
    """An integer >= ``low``; the message names the option (click adds it) and the bound."""

    def __init__(self, low: int) -> None:
        self.low = low

    def convert(self, value, param, ctx) -> int:
        number = super().convert(value, param, ctx)
        if number < self.low:
            self.fail(
                f"{number} makes no sense here; expected an integer >= {self.low}", param, ctx
            )
        return number


class Finite(click.types.FloatParamType):
    """A finite float (``nan`` and ``inf`` refused); > 0 as well when ``positive``."""

    def __init__(self, positive: bool = False) -> None:
        self.positive = positive

    def convert(self, value, param, ctx) -> float:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{number} is not a finite number", param, ctx)
        if self.positive and number <= 0:
            self.fail(f"{number} makes no sense here; expected a number > 0", param, ctx)
        return number


class FiniteRange(click.FloatRange):
    """``click.FloatRange`` that also refuses ``nan`` (which no comparison excludes)."""

    def convert(self, value, param, ctx) -> float:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{number} is not a finite number", param, ctx)
        return number


COUNT = AtLeast(1)  # counts and sizes: --num, --batch-size, --steps, ...
NON_NEGATIVE = AtLeast(0)  # --num-workers, --warmup, --threads (0: the default), ...
SEED = click.types.IntParamType()  # any integer, negative ones included
FINITE = Finite()
POSITIVE = Finite(positive=True)  # --lr


# the options of dataset_options, named after open_dataset's arguments
DATASET_OPTION_KEYS = ("dataset", "data_root", "split", "image_size", "channels", "on_error")


def device_option(default: str | None = None) -> Callable:
    """``--device``: cpu, cuda, cuda:N, or auto (default: CUDA if available)."""
    shown = default or "auto: cuda if available, else cpu"
    return click.option("--device", default=default, help=f"cpu, cuda, cuda:N or auto [{shown}].")


def resolve_device(name: str | None) -> str:
    """The device ``--device`` names (unset or ``auto``: CUDA if available, else the CPU)."""
    if name and name != "auto":
        if name.startswith("cuda") and not torch.cuda.is_available():
            raise click.BadParameter(
                f"{name!r} requested but CUDA is not available", param_hint="--device"
            )
        return name
    return "cuda" if torch.cuda.is_available() else "cpu"


set_option = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="SECTION.KEY=VALUE",
    help="Typed config override, e.g. --set train.lr=2e-4 (repeatable).",
)


def dry_run_option(what: str = "the resolved settings") -> Callable:
    return click.option("--dry-run", is_flag=True, help=f"Print {what} and exit.")


def print_params(**resolved) -> None:
    """``--dry-run`` of a command whose options are its settings: them as JSON (``--device``
    resolved, ``resolved`` replacing others)."""
    params = dict(click.get_current_context().params)
    params.pop("dry_run", None)
    if "device" in params:
        params["device"] = resolve_device(params["device"])
    click.echo(json.dumps({**params, **resolved}, indent=2, default=str))


def on_error_option() -> Callable:
    """The ``--on-error`` option of every command that reads image files."""
    return click.option(
        "--on-error",
        type=click.Choice(ON_ERROR),
        default="raise",
        show_default=True,
        help=ON_ERROR_HELP,
    )


def dataset_options(fn: Callable) -> Callable:
    """Click options named after :func:`sfd.data.images.open_dataset`'s arguments."""
    options = (
        click.option("--dataset", type=click.Choice(DATASETS), default="fashion-mnist"),
        click.option("--data-root", default=None, help="IDX directory or root/<class>/ folder"),
        click.option("--split", type=click.Choice(["train", "test"]), default="train"),
        click.option("--image-size", type=COUNT, default=32, show_default=True),
        click.option("--channels", type=click.Choice(["1", "3"]), default="1", show_default=True),
        on_error_option(),
    )
    for option in reversed(options):
        fn = option(fn)
    return fn


def dataset_of(kw: dict, **changes) -> torch.utils.data.Dataset:
    """The dataset :func:`dataset_options` describe (``changes`` replace some of them)."""
    return open_dataset(**{**{k: kw[k] for k in DATASET_OPTION_KEYS}, **changes})


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


no_verify_option = click.option(
    "--no-verify",
    is_flag=True,
    help="Skip checking the data's shards against their sha256 digests before training "
    "(recorded in the run's data_check.json). Default: checked once per run.",
)
