"""The two locks of a resumable output: who may write it, and with which settings.

:class:`DirLock`: one process per run directory at a time. ``DIR/.lock`` holds the owner's host
and pid, created with ``O_EXCL`` (atomic on local and NFS v3+ file systems). A lock whose process
is gone (same host) is stale and taken over, so a ``kill -9`` never blocks a rerun; a lock from
another host is assumed alive. Used by ``sfd train`` (the run directory) and ``sfd ablate`` (each
job's run directory).

:func:`claim_settings`: the settings a resumable output was started with (a sampling job,
extracted shards, re-encoded REPA targets, an autoencoder run), recorded by its first run; a
rerun into the same directory must bring the same ones, so a resumed output is never a mix of two
settings.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from sfd.data.tensor_files import atomic_write_json
from sfd.errors import MismatchError


class DirLock:
    """``acquire()`` -> bool; ``release()``; ``owner()`` describes the holder."""

    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / ".lock"

    def __str__(self) -> str:
        return str(self.path)

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = f"{socket.gethostname()} {os.getpid()}"
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                if not self._stale(socket.gethostname()):
                    return False
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(me)
            return True
        return False

    def owner(self) -> str:
        try:
            host, pid = self.path.read_text().split()
            return f"process {pid} on {host}"
        except (OSError, ValueError):
            return "another process"

    def _stale(self, host: str) -> bool:
        try:
            owner_host, pid = self.path.read_text().split()
            if owner_host != host:
                return False  # another machine's process: cannot tell, assume alive
            if int(pid) == os.getpid():
                return True  # left by this process (an earlier call that failed)
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False  # alive, another user's
        except (OSError, ValueError):
            return True  # unreadable or half-written lock
        return False

    def release(self) -> None:
        self.path.unlink(missing_ok=True)


def refuse_other_settings(where: Path, what: str, stored: dict, settings: dict, hint: str) -> None:
    """The one check behind every resumable output (sampling jobs, extracted shards, autoencoder
    runs): ``settings`` must equal those ``stored`` by the first run (compared as JSON stores
    them), else :class:`MismatchError` names the keys that differ."""
    settings = json.loads(json.dumps(settings))
    differ = sorted(k for k in stored.keys() | settings.keys() if stored.get(k) != settings.get(k))
    if differ:
        raise MismatchError(
            f"{where} holds {what} with other settings ({', '.join(differ)}); {hint}"
        )


def claim_settings(path: Path, settings: dict, what: str, hint: str, write: bool = True) -> None:
    """Record ``settings`` at ``path`` (JSON) on the first run into its directory (when
    ``write``: the main rank); a later run must bring the same ones
    (:func:`refuse_other_settings`)."""
    path = Path(path)
    if path.exists():
        refuse_other_settings(path.parent, what, json.loads(path.read_text()), settings, hint)
    elif write:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, settings)
