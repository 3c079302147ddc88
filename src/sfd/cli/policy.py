"""The command line's one error policy (the command-line side of :mod:`sfd.errors`).

Library code raises typed errors; here, and only here, they become one line on stderr with the
policy's exit code: :class:`PolicyGroup` for the ``sfd`` group, :func:`apply_policy` for every
command (also when a command is invoked on its own), and :func:`param_errors` to name the option a
library ``ValueError`` is about. Absurd numbers are refused by the options themselves, before any
work starts (their ranges: :mod:`sfd.cli.options`). ``--debug`` / ``SFD_DEBUG=1`` keep the
traceback.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager

import click

from sfd.errors import EXIT_USAGE, ConfigError, SfdError, classify, debug_enabled, one_line


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


def apply_policy(group: click.Group) -> None:
    """Every command of ``group`` (and of its subgroups) follows the error policy
    (:func:`one_line_errors`), also when invoked on its own."""
    for command in group.commands.values():
        if isinstance(command, click.Group):
            apply_policy(command)
        elif command.callback is not None:
            command.callback = one_line_errors(command.callback)
