"""The ``sfd`` command line: thin click commands over library functions, one module per verb
group (:mod:`~sfd.cli.train`, :mod:`~sfd.cli.sample`, :mod:`~sfd.cli.data`,
:mod:`~sfd.cli.autoencoders`, :mod:`~sfd.cli.eval`, :mod:`~sfd.cli.bench`,
:mod:`~sfd.cli.experiments`, :mod:`~sfd.cli.ecosystem`), the options they share with the range
each numeric option declares (:mod:`~sfd.cli.options`) and one error policy
(:mod:`~sfd.cli.policy`). No module outside this package imports click.

Naming: the function of ``sfd some-verb`` is ``some_verb_command`` (``train_command``,
``ref_stats_command``); each module lists its commands in ``COMMANDS``.
"""

from __future__ import annotations

import logging

import click

from sfd.cli import autoencoders, bench, data, ecosystem, experiments, sample, train
from sfd.cli import eval as eval_cli
from sfd.cli.policy import PolicyGroup, apply_policy


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )


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
    10 a distributed job lost a rank (or was stopped by SIGTERM),
    70 internal error (a bug: rerun with --debug and report it)."""
    _setup_logging(verbose)


for _group in (train, sample, data, autoencoders, eval_cli, bench, experiments, ecosystem):
    for _command in _group.COMMANDS:
        main.add_command(_command)
apply_policy(main)

__all__ = ["main"]
