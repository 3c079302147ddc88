"""``sfd bench``: the training step's and the sampler's throughput on this device, or this tree
against another version of sfd (a thin shell over :mod:`sfd.bench`)."""

from __future__ import annotations

import dataclasses
import json

import click
import torch

from sfd.bench.compare import compare
from sfd.cli.options import (
    COUNT,
    NON_NEGATIVE,
    device_option,
    resolve_config,
    resolve_device,
    set_option,
)
from sfd.config import PRESETS


@click.command("bench")
@click.option(
    "--preset", "preset_name", type=click.Choice(PRESETS), default="tiny", show_default=True
)
@set_option
@click.option("--batch-size", type=COUNT, default=16, show_default=True)
@device_option()
@click.option("--iters", type=COUNT, default=5, show_default=True, help="Timed iterations.")
@click.option("--warmup", type=NON_NEGATIVE, default=2, show_default=True)
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
@click.option(
    "--repeats",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="With --compare: fresh pairs of worker processes, each timing --iters rounds.",
)
@click.option("--threads", type=NON_NEGATIVE, default=0, help="Torch threads (0: torch's default).")
def bench_command(
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
    repeats,
    threads,
) -> None:
    """Time the training step and the sampler; print img/s, FLOPs and MFU.

    With --compare REF: the training step (or forward) of this tree and of REF, each in its own
    process, alternated call by call; the medians, their ratio and its spread.
    """
    if ref is not None:
        resolve_config(preset_name, None, overrides)  # unknown keys fail here, not in a worker
        result = compare(
            ref,
            preset_name,
            batch_size,
            overrides=tuple(overrides),
            ref_overrides=tuple(ref_overrides) if ref_overrides else None,
            mode=mode,
            device=str(resolve_device(device)),
            threads=threads,
            warmup=warmup,
            iters=iters,
            repeats=repeats,
        )
        click.echo(json.dumps(dataclasses.asdict(result), indent=2) if as_json else result.table())
        return
    # lazy: the benchmark builds the training step (torch.distributed.checkpoint, ~1.5 s)
    from sfd.bench.throughput import run_bench

    if threads:
        torch.set_num_threads(threads)
    cfg = resolve_config(preset_name, None, overrides)
    result = run_bench(cfg, batch_size, resolve_device(device), warmup=warmup, iters=iters)
    click.echo(json.dumps(dataclasses.asdict(result), indent=2) if as_json else result.table())


COMMANDS = (bench_command,)
