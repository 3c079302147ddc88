"""What machine this is, for reports (``sfd bench``, ``sfd demo``'s metrics), and what it can
build (a C++ compiler for ``torch.compile`` on CPU)."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

import torch

from sfd.errors import ConfigError


def cpu_model_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def missing_compiler(device: str | torch.device) -> str | None:
    """Why ``torch.compile`` cannot build kernels for ``device`` on this machine, or None.

    On CPU, inductor compiles C++ with the first of ``torch._inductor.config.cpp.cxx``
    (``g++`` by default) that answers ``--version``; without one the first compiled call fails.
    The same probe here. Other devices: None.
    """
    if torch.device(device).type != "cpu":
        return None
    from torch._inductor import config as inductor  # lazy: seconds to import, CPU compile only

    cxx = inductor.cpp.cxx
    names = [n for n in (cxx if isinstance(cxx, (list, tuple)) else (cxx,)) if isinstance(n, str)]
    for name in names:
        try:
            subprocess.run([name, "--version"], capture_output=True, check=True, timeout=30)
            return None
        except (OSError, subprocess.SubprocessError):
            continue
    wanted = ", ".join(names) or "g++"
    return f"torch.compile on CPU needs a C++ compiler ({wanted}) on PATH; none was found"


def require_compiler(device: str | torch.device, option: str, without: str) -> None:
    """One ``ConfigError`` naming ``option`` (and ``without``, how to do without it) where
    :func:`missing_compiler` finds that ``torch.compile`` cannot build kernels here."""
    if why := missing_compiler(device):
        raise ConfigError(f"{option}: {why} (install one, or {without})")
