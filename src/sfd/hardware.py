"""What machine this is, for reports (``sfd bench``, ``sfd demo``'s metrics), and what it can
build (a C++ compiler for ``torch.compile`` on CPU)."""

from __future__ import annotations

import platform
import shutil
from pathlib import Path

import torch


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

    On CPU, inductor compiles C++ with the compilers of ``torch._inductor.config.cpp.cxx``
    (``g++`` by default); without one the first compiled call fails. Other devices: None.
    """
    if torch.device(device).type != "cpu":
        return None
    from torch._inductor import config as inductor

    names = inductor.cpp.cxx if isinstance(inductor.cpp.cxx, (list, tuple)) else (inductor.cpp.cxx,)
    if any(isinstance(n, str) and shutil.which(n) for n in names):
        return None
    wanted = ", ".join(n for n in names if isinstance(n, str)) or "g++"
    return f"torch.compile on CPU needs a C++ compiler ({wanted}) on PATH; none was found"
