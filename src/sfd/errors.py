"""One error policy for every command: expected failures are one line with a distinct exit code.

Library code raises the typed errors below at its boundaries (each is also a ``ValueError`` or
``OSError``, so callers that catch those keep working). The ``sfd`` command group turns any
exception into one line on stderr, ``Error: <what> (<which input>)``, and an exit code that says
which kind of failure it was; ``--debug`` or ``SFD_DEBUG=1`` shows the traceback instead.

=====  =================================================================================
code   meaning
=====  =================================================================================
0      success
1      a refused request not covered below (a library ``ValueError``, ``click`` error)
2      bad command line: an unknown option, a value out of range (``--num 0``), a bad --set
3      a bad input file: missing, unreadable, truncated, wrong format or contents
4      a bad config: a config file or stored config with a wrong type, unknown key or value
5      inputs that do not fit together: data vs checkpoint vs config (shapes, statistics)
6      a file refused as unsafe: a pickle that would run code when loaded
7      a write failed: output not writable, disk full, I/O error (previous state kept)
8      busy: another live process holds the run directory's lock
9      training diverged (loss spikes beyond the rollback budget)
10     a distributed job lost a rank (it died or its host is unreachable), or this rank was
       stopped by SIGTERM (torchrun stops every rank when one fails); outputs up to the last
       checkpoint or finished file are intact and a rerun resumes
70     an internal error (a bug in sfd): please report it, with the ``--debug`` traceback
=====  =================================================================================
"""

from __future__ import annotations

import errno
import os
import pickle
import re
from pathlib import Path

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_BAD_INPUT = 3
EXIT_CONFIG = 4
EXIT_MISMATCH = 5
EXIT_UNSAFE = 6
EXIT_WRITE = 7
EXIT_BUSY = 8
EXIT_DIVERGED = 9
EXIT_LOST_RANK = 10
EXIT_INTERNAL = 70


class SfdError(Exception):
    """Base of sfd's expected failures; ``exit_code`` is the command's exit status."""

    exit_code = EXIT_ERROR


class BadInputError(SfdError, ValueError):
    """A file or directory the user gave cannot be read as what it should be."""

    exit_code = EXIT_BAD_INPUT


class MissingInputError(SfdError, FileNotFoundError):
    """A file or directory the user named does not exist (or lacks what it must hold)."""

    exit_code = EXIT_BAD_INPUT


class ConfigError(SfdError, ValueError):
    """A configuration value, key or file that is wrong (names the key)."""

    exit_code = EXIT_CONFIG


class OverrideError(ConfigError):
    """A bad ``--set SECTION.KEY=VALUE`` (the CLI reports it as a command-line error)."""

    exit_code = EXIT_USAGE


class UsageError(SfdError, ValueError):
    """A request that cannot be carried out as given (a missing input the caller must name, a
    value out of range); the command line reports it as a command-line error."""

    exit_code = EXIT_USAGE


class MismatchError(SfdError, ValueError):
    """Inputs that are each fine but do not fit together (shapes, statistics, configs)."""

    exit_code = EXIT_MISMATCH


class UnsafeFileError(SfdError, ValueError):
    """A file refused because loading it could run code (a pickle with globals)."""

    exit_code = EXIT_UNSAFE


class WriteError(SfdError, OSError):
    """An output could not be written; what was there before is intact."""

    exit_code = EXIT_WRITE


class BusyError(SfdError, RuntimeError):
    """Another live process holds the lock of a run directory."""

    exit_code = EXIT_BUSY


class DivergedError(SfdError, RuntimeError):
    """Training diverged beyond what skipping and rollback can repair."""

    exit_code = EXIT_DIVERGED


class LostRankError(SfdError, RuntimeError):
    """Another rank of a distributed job died or cannot be reached (or this one was stopped)."""

    exit_code = EXIT_LOST_RANK


def debug_enabled() -> bool:
    return os.environ.get("SFD_DEBUG", "").lower() in ("1", "true", "yes", "on")


def one_line(text: str) -> str:
    """``text`` as one line (newlines of library messages become '; ')."""
    parts = [p.strip() for p in str(text).splitlines() if p.strip()]
    return "; ".join(parts)


def first_line(err: BaseException) -> str:
    """The first line of ``err``'s message (its type's name if it has none)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def classify(err: BaseException) -> tuple[int, str]:
    """(exit code, one-line message) for any exception a command lets escape."""
    if isinstance(err, SfdError):
        return err.exit_code, one_line(str(err))
    if isinstance(err, OSError) and not isinstance(err, FileNotFoundError | FileExistsError):
        name = err.filename or ""
        where = f"{name}: " if name else ""
        if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EACCES) or (
            isinstance(err, PermissionError)
        ):
            return EXIT_WRITE, f"{where}{err.strerror or first_line(err)}"
        if isinstance(err, NotADirectoryError | IsADirectoryError):
            return EXIT_BAD_INPUT, f"{where}{err.strerror or first_line(err)}"
        return EXIT_WRITE if name else EXIT_ERROR, f"{where}{err.strerror or first_line(err)}"
    if isinstance(err, FileNotFoundError):
        msg = str(err) if not err.filename else f"{err.filename} does not exist"
        return EXIT_BAD_INPUT, one_line(msg)
    if isinstance(err, FileExistsError):
        return EXIT_ERROR, one_line(str(err))
    if isinstance(err, pickle.UnpicklingError):
        return EXIT_UNSAFE, f"refused a pickle that would run code: {first_line(err)}"
    if type(err).__name__ == "SafetensorError":
        if "serializing" in str(err) and as_os_error(err) is not None:
            return EXIT_WRITE, f"writing a safetensors file failed: {as_os_error(err).strerror}"
        return EXIT_BAD_INPUT, f"not a readable safetensors file: {first_line(err)}"
    if isinstance(err, ValueError):
        return EXIT_ERROR, one_line(str(err))
    if isinstance(err, MemoryError):
        return EXIT_ERROR, "out of memory (try a smaller --batch-size)"
    return EXIT_INTERNAL, (
        f"internal error {type(err).__name__}: {first_line(err)} "
        f"(a bug in sfd; rerun with --debug or SFD_DEBUG=1 for the traceback and report it)"
    )


# errno values that mean "this write could not be done" (as opposed to a bad input file)
WRITE_ERRNOS = frozenset(
    (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG)
)


def as_os_error(err: BaseException) -> OSError | None:
    """``err`` as the OSError it reports: itself, or a library's wrapper of one (safetensors
    reports a failed write as ``SafetensorError: Error while serializing: I/O error: No space
    left on device (os error 28)``); ``None`` if it is not about the operating system."""
    if isinstance(err, OSError):
        return err
    text = str(err)
    if type(err).__name__ != "SafetensorError" or "I/O error" not in text:
        return None
    found = re.search(r"os error (\d+)", text)
    code = int(found.group(1)) if found else errno.EIO
    return OSError(code, os.strerror(code))


def write_failed(target: str | Path, err: OSError, kept: str = "") -> WriteError:
    """A :class:`WriteError` saying what failed to be written, why, and what is intact."""
    reason = getattr(err, "reason", None) or err.strerror or first_line(err)
    tail = f"; {kept}" if kept else ""
    out = WriteError(f"writing {target} failed: {reason}{tail}")
    out.reason = reason
    return out


def install_hint(extra: str) -> str:
    """How to install the optional ``extra`` (``app``, ``wandb``): from a wheel or a clone."""
    return f"pip install 'sfd[{extra}]' (in a clone of the repository: pip install -e '.[{extra}]')"
