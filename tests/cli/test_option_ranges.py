"""Every numeric option of every command declares its range on itself (sfd.cli.options), so an
absurd value is refused before any work starts, in one line naming the option and the range."""

import math

import click
import pytest

from sfd.cli import main
from sfd.cli.options import COUNT, FINITE, NON_NEGATIVE, POSITIVE, SEED, FiniteRange


def _numeric_options():
    for name, command in sorted(main.commands.items()):
        for param in command.params:
            if isinstance(param.type, click.types.IntParamType | click.types.FloatParamType):
                yield name, param


def test_every_numeric_option_declares_a_range():
    undeclared = [
        f"sfd {name} {param.opts[0]}: {param.type!r}"
        for name, param in _numeric_options()
        if not (
            any(param.type is t for t in (COUNT, NON_NEGATIVE, SEED, FINITE, POSITIVE))
            or isinstance(param.type, FiniteRange)
            or (isinstance(param.type, click.IntRange) and param.type.min is not None)
        )
    ]
    assert not undeclared, "\n".join(undeclared)
    assert len(list(_numeric_options())) > 50  # the commands' options were all seen


@pytest.mark.parametrize(
    "kind, bad, message",
    [
        (COUNT, "0", "0 makes no sense here; expected an integer >= 1"),
        (COUNT, "-3", "-3 makes no sense here; expected an integer >= 1"),
        (NON_NEGATIVE, "-1", "-1 makes no sense here; expected an integer >= 0"),
        (FINITE, "nan", "nan is not a finite number"),
        (FINITE, "-inf", "-inf is not a finite number"),
        (POSITIVE, "0", "0.0 makes no sense here; expected a number > 0"),
        (FiniteRange(0.0, 1.0), "nan", "nan is not a finite number"),
        (FiniteRange(0.0, 1.0), "2", "2.0 is not in the range 0.0<=x<=1.0."),
    ],
)
def test_a_bad_value_is_one_line_naming_the_option_and_the_range(kind, bad, message):
    option = click.Option(["--n"], type=kind)
    with pytest.raises(click.BadParameter) as err:
        option.process_value(click.Context(click.Command("c")), bad)
    assert err.value.format_message() == f"Invalid value for '--n': {message}"


@pytest.mark.parametrize(
    "kind, good",
    [(COUNT, 1), (NON_NEGATIVE, 0), (SEED, -5), (FINITE, -2.5), (POSITIVE, 1e-9)],
)
def test_values_in_range_pass_unchanged(kind, good):
    option = click.Option(["--n"], type=kind)
    got = option.process_value(click.Context(click.Command("c")), str(good))
    assert got == good and math.isfinite(got)
