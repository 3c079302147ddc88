"""The command line's one error policy (the command-line side of :mod:`sfd.errors`).

Library code raises typed errors; here, and only here, they become one line on stderr with the
policy's exit code: :class:`PolicyGroup` for the ``sfd`` group, :func:`apply_policy` for every
command (also when a command is invoked on its own), :func:`param_errors` to name the option a
library ``ValueError`` is about, and the value policy (absurd numbers refused before any work
starts). ``--debug`` / ``SFD_DEBUG=1`` keep the traceback.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from contextlib import contextmanager

import click

from sfd.errors import EXIT_USAGE, ConfigError, SfdError, classify, debug_enabled, one_line

# Integer options that count things: 0 or less makes no sense (``--num 0``, ``--batch-size 0``).
POSITIVE_INTS = frozenset(
    {
        "num", "batch_size", "shard_size", "image_size", "iters", "seeds", "sweep_seeds",
        "steps", "checkpoints", "num_samples", "total_steps", "grid", "log_every",
        "latent_channels", "layers_per_block", "norm_num_groups", "hidden_dim", "depth",
        "num_heads", "width", "feature_size", "ckpt_every",
    }
)  # fmt: skip
# Integer options that may be negative (everything else must be >= 0).
SIGNED_INTS = frozenset({"seed"})
# Float options that must be > 0.
POSITIVE_FLOATS = frozenset({"lr"})


class OneLineError(click.ClickException):
    """``Error: <message>`` on one line of stderr, with the policy's exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(one_line(message))
        self.exit_code = exit_code


def to_click_error(err: BaseException) -> click.ClickException:
    """The one-line click error for any exception (see :mod:`sfd.errors` for the codes)."""
    if isinstance(err, click.ClickException):
        message, code = err.format_message(), err.exit_code
        # A command that re-raised a typed library error as a click error keeps its exit code.
        cause = err.__cause__ or err.__context__
        if isinstance(cause, SfdError) and not isinstance(cause, ConfigError):
            code = cause.exit_code
        elif isinstance(err, click.UsageError) and err.ctx is not None:
            message = f"{message} (see '{err.ctx.command_path} --help')"
        return OneLineError(message, code)
    code, message = classify(err)
    ctx = click.get_current_context(silent=True)
    if code == EXIT_USAGE and isinstance(err, SfdError) and ctx is not None:
        message = f"{message} (see '{ctx.command_path} --help')"
    return OneLineError(message, code)


def one_line_errors(fn):
    """``fn`` (a command's callback) reporting any failure as one line with the policy's exit
    code; the ``sfd`` group does the same, this keeps a command invoked on its own alike."""
    if getattr(fn, "_sfd_policy", False):
        return fn

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

    wrapper._sfd_policy = True
    return wrapper


@contextmanager
def param_errors(hint: str) -> Iterator[None]:
    """A library ``ValueError`` raised inside becomes a command-line error about ``hint``
    (an option or argument); typed errors of :mod:`sfd.errors` keep their exit codes."""
    try:
        yield
    except SfdError:
        raise
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint=hint) from err


def wants_traceback() -> bool:
    ctx = click.get_current_context(silent=True)
    root = ctx.find_root() if ctx is not None else None
    return bool(root is not None and root.params.get("debug")) or debug_enabled()


class PolicyGroup(click.Group):
    """A click group whose commands all follow the error policy of :mod:`sfd.errors`."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.Abort, KeyboardInterrupt, SystemExit):
            raise
        except OneLineError:
            raise
        except click.ClickException as err:
            raise to_click_error(err) from None
        except Exception as err:
            if ctx.params.get("debug") or debug_enabled():
                raise
            raise to_click_error(err) from None


def _check_int(name: str, positive: bool):
    low = 1 if positive else 0

    def check(ctx, param, value):
        values = value if isinstance(value, tuple) else (value,)
        for v in values:
            if isinstance(v, int) and not isinstance(v, bool) and v < low:
                raise click.BadParameter(
                    f"{v} makes no sense here; expected an integer >= {low}", ctx, param
                )
        return value

    return check


def _check_float(name: str, positive: bool):
    def check(ctx, param, value):
        values = value if isinstance(value, tuple) else (value,)
        for v in values:
            if isinstance(v, float) and not math.isfinite(v):
                raise click.BadParameter(f"{v} is not a finite number", ctx, param)
            if isinstance(v, float) and positive and v <= 0:
                raise click.BadParameter(
                    f"{v} makes no sense here; expected a number > 0", ctx, param
                )
        return value

    return check


def _chain(first, second):
    if first is None:
        return second

    def both(ctx, param, value):
        return first(ctx, param, second(ctx, param, value))

    return both


def apply_policy(group: click.Group) -> None:
    """Every command of ``group`` follows the error policy (:func:`one_line_errors`) and the
    value policy: counts and sizes must be >= 1, other integers >= 0 (seeds excepted), floats
    finite, refused by option name before the command runs."""
    for command in group.commands.values():
        if isinstance(command, click.Group):
            apply_policy(command)
            continue
        if command.callback is not None:
            command.callback = one_line_errors(command.callback)
        for param in command.params:
            if not isinstance(param, click.Option) or getattr(param, "_sfd_policy", False):
                continue
            name = param.name or ""
            kind = param.type
            if isinstance(kind, click.types.IntParamType) and name not in SIGNED_INTS:
                check = _check_int(name, name in POSITIVE_INTS)
            elif isinstance(kind, click.types.FloatParamType):
                check = _check_float(name, name in POSITIVE_FLOATS)
            else:
                continue
            param.callback = _chain(param.callback, check)
            param._sfd_policy = True
