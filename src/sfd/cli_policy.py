"""The command-line side of :mod:`sfd.errors`: the ``sfd`` group that applies the error policy
to every command, and the value policy (absurd numbers refused before any work starts)."""

from __future__ import annotations

import math

import click

from sfd.errors import ConfigError, SfdError, classify, debug_enabled, one_line

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
    return OneLineError(message, code)


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


def apply_value_policy(group: click.Group) -> None:
    """Refuse absurd numbers on every command of ``group``, by option name, before it runs:
    counts and sizes must be >= 1, other integers >= 0 (seeds excepted), floats finite."""
    for command in group.commands.values():
        if isinstance(command, click.Group):
            apply_value_policy(command)
            continue
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
